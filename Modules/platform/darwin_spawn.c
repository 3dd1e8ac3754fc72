/* platform/darwin_spawn.c -- the macOS version of posix_spawn.c.

   macOS's posix_spawn() is a system call that can close every descriptor
   not explicitly inherited (POSIX_SPAWN_CLOEXEC_DEFAULT together with
   posix_spawn_file_actions_addinherit_np), which is exactly the contract,
   and it reports exec failures as its return value.  No user code runs in
   the child, so no signal handler needs resetting: exec does that. */
#include "platform/platform.h"

#ifdef CMP_DARWIN

#  include "platform/posix_internal.h"
#  include "platform/spawn.h"

#  include <errno.h>
#  include <fcntl.h>
#  include <signal.h>
#  include <spawn.h>
#  include <unistd.h>

#  include <mach-o/dyld.h>

extern char **environ;

int
cmp_spawn_check_fd(int fd)
{
    if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
        return EBADF;
    }
    return 0;
}

int
cmp_spawn_fork_exec(const cmp_spawn_request *req, long *pid_out)
{
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t mask;
    pid_t pid;
    int err;

    err = posix_spawn_file_actions_init(&actions);
    if (err != 0) {
        return err;
    }
    err = posix_spawnattr_init(&attr);
    if (err != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return err;
    }
    for (int fd = 0; fd < 3 && err == 0; fd++) {
        if (fcntl(fd, F_GETFD) >= 0) {
            err = posix_spawn_file_actions_addinherit_np(&actions, fd);
        }
    }
    for (size_t i = 0; i < req->n_keep && err == 0; i++) {
        err = posix_spawn_file_actions_addinherit_np(&actions,
                                                     req->keep_fds[i]);
    }
    if (err == 0) {
        pthread_sigmask(SIG_SETMASK, NULL, &mask);
        err = posix_spawnattr_setsigmask(&attr, &mask);
    }
    if (err == 0) {
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_CLOEXEC_DEFAULT |
                                                  POSIX_SPAWN_SETSIGMASK);
    }
    if (err == 0) {
        err = posix_spawn(&pid, req->path, &actions, &attr, req->argv,
                          environ);
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (err == 0) {
        *pid_out = (long)pid;
    }
    return err;
}

/* The main program is the image of index 0. */
static int
is_main_image(const void *addr, const void *image_base)
{
    (void)addr;
    return image_base == (const void *)_dyld_get_image_header(0);
}

/* The image holding addr: the Python framework's binary or a libpython
   dylib, unless it is the main program's own image. */
int
cmp_spawn_library_of(const void *addr, char *buf, size_t size, int *in_program)
{
    return cmp_posix_library_of(addr, is_main_image, buf, size, in_program);
}

#endif /* CMP_DARWIN */
