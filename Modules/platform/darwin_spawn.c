/* platform/darwin_spawn.c -- the macOS version of posix_spawn.c.

   macOS's posix_spawn() is a system call that can close every descriptor
   not explicitly inherited (POSIX_SPAWN_CLOEXEC_DEFAULT together with
   posix_spawn_file_actions_addinherit_np), which is exactly the contract,
   and it reports exec failures as its return value.  No user code runs in
   the child, so no signal handler needs resetting: exec does that. */
#include "platform/platform.h"

#ifdef CMP_DARWIN

#include "platform/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <dlfcn.h>
#include <mach-o/dyld.h>
#include <string.h>

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
        err = posix_spawnattr_setflags(
            &attr, POSIX_SPAWN_CLOEXEC_DEFAULT | POSIX_SPAWN_SETSIGMASK);
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

/* The image holding addr: the Python framework's binary or a libpython
   dylib, unless it is the main program's own image (index 0). */
int
cmp_spawn_library_of(const void *addr, char *buf, size_t size,
                     int *in_program)
{
    *in_program = 0;
    if (size > 0) {
        buf[0] = '\0';
    }
    Dl_info info;
    if (dladdr(addr, &info) == 0 || info.dli_fname == NULL ||
        info.dli_fname[0] == '\0') {
        return ENOENT;   /* not in any loaded image: cannot happen */
    }
    if (info.dli_fbase == (void *)_dyld_get_image_header(0)) {
        *in_program = 1;
        return 0;
    }
    if (strlen(info.dli_fname) >= size) {
        return ENAMETOOLONG;
    }
    strcpy(buf, info.dli_fname);
    return 0;
}

#endif /* CMP_DARWIN */
