/* platform/posix_proc.c -- POSIX implementation of platform/proc.h. */
/* pipe2() and kill() need more than strict C11 (the build adds these too). */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE 1
#endif
#ifndef _DARWIN_C_SOURCE
#  define _DARWIN_C_SOURCE 1
#endif
#include "platform/platform.h"
#include "platform/posix_internal.h"

#ifdef CMP_POSIX
#  include <errno.h>
#  include <fcntl.h>
#  include <signal.h>
#  include <sys/types.h>
#  include <sys/wait.h>
#  include <unistd.h>

int
cmp_proc_pipe(cmp_handle_t fds[2])
{
#  if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) ||    \
      defined(__OpenBSD__)
    if (pipe2(fds, O_CLOEXEC) == 0) {
        return 0;
    }
    if (errno != ENOSYS) {
        return errno;
    }
#  endif
    if (pipe(fds) < 0) {
        return errno;
    }
    int err = cmp_posix_set_cloexec(fds[0]);
    if (err == 0) {
        err = cmp_posix_set_cloexec(fds[1]);
    }
    if (err != 0) {
        close(fds[0]);
        close(fds[1]);
        fds[0] = fds[1] = -1;
    }
    return err;
}

int
cmp_proc_close(cmp_handle_t fd)
{
    if (close(fd) < 0 && errno != EINTR) {
        return errno;
    }
    return 0;
}

int
cmp_proc_fork(long *pid)
{
    pid_t child = fork();
    if (child < 0) {
        return errno;
    }
    *pid = (long)child;
    return 0;
}

void
cmp_proc_exit_now(int code)
{
    _exit(code);
}

int
cmp_proc_reap(long pid, int block, int *done, int *exitcode)
{
    int status = 0;
    pid_t got = waitpid((pid_t)pid, &status, block ? 0 : WNOHANG);
    if (got < 0) {
        return errno;
    }
    if (got == 0) {
        *done = 0;
        return 0;
    }
    *done = 1;
    *exitcode = cmp_posix_exit_code(status);
    return 0;
}

int
cmp_proc_reap_any(long *pid, int *exitcode)
{
    int status = 0;
    pid_t got;
    while ((got = waitpid(-1, &status, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (got < 0) {
        *pid = 0;
        return errno == ECHILD ? 0 : errno;
    }
    *pid = (long)got;
    if (got > 0) {
        *exitcode = cmp_posix_exit_code(status);
    }
    return 0;
}

int
cmp_proc_signal(long pid, int sig)
{
    if (kill((pid_t)pid, sig) < 0) {
        return errno;
    }
    return 0;
}

#endif /* CMP_POSIX */
