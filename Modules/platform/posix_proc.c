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
#  include <pthread.h>
#  include <signal.h>
#  include <sys/types.h>
#  include <sys/wait.h>
#  include <unistd.h>
#  include <stdint.h>
#  include <stdio.h>
#  include <stdlib.h>
#  include <string.h>
#  ifdef CMP_DARWIN
#    include <libproc.h>
#    include <sys/proc.h>
#    include <sys/proc_info.h>
#  endif

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

/* ---- process identity (robust.h's owner records) ---------------------- */

#  ifdef __linux__
/* State letter and start time (clock ticks after boot) of process pid,
   from /proc/<pid>/stat: 0, ENOENT/ESRCH when there is no such process,
   or another code when /proc cannot tell. */
static int
linux_stat(long pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    (void)snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return errno;
    }
    ssize_t n;
    do {
        n = read(fd, buf, sizeof(buf) - 1);
    } while (n < 0 && errno == EINTR);
    int err = n < 0 ? errno : 0;
    (void)close(fd);
    if (err) {
        return err;
    }
    buf[n] = '\0';
    /* "pid (comm) S ppid ...": comm may hold anything, ')' included, so
       the fields start after the last ')'.  The state is the first field
       there, the start time the twentieth. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] == '\0') {
        return EINVAL;
    }
    *state = p[2];
    p += 2;
    for (int field = 1; field < 20; field++) {
        p = strchr(p, ' ');
        if (p == NULL) {
            return EINVAL;
        }
        p++;
    }
    *start = (uint64_t)strtoull(p, NULL, 10);
    return 0;
}
#  endif

#  ifdef CMP_DARWIN
/* Status and start time (microseconds) of process pid, as linux_stat. */
static int
darwin_stat(long pid, char *state, uint64_t *start)
{
    struct proc_bsdinfo info;
    int n = proc_pidinfo((int)pid, PROC_PIDTBSDINFO, 0, &info,
                         (int)sizeof(info));
    if (n != (int)sizeof(info)) {
        return n <= 0 && errno ? errno : ESRCH;
    }
    *state = info.pbi_status == SZOMB ? 'Z' : 'R';
    *start = (uint64_t)info.pbi_start_tvsec * 1000000u +
             (uint64_t)info.pbi_start_tvusec;
    return 0;
}
#    define proc_stat darwin_stat
#  elif defined(__linux__)
#    define proc_stat linux_stat
#  endif

/* This process's tag, 0 until computed; a forked child starts again. */
static uint64_t self_tag;

static void
forget_self_tag(void)
{
    self_tag = 0;
}

uint64_t
cmp_proc_self_tag(void)
{
    /* (on every acquire and release of a robust lock: one load when
       known) */
    if (self_tag == 0) {
        static int hooked;
        if (!hooked) {
            hooked = pthread_atfork(NULL, NULL, forget_self_tag) == 0;
        }
        long pid = (long)getpid();
        uint64_t start = 0;
#  ifdef proc_stat
        char state;
        if (proc_stat(pid, &state, &start) != 0) {
            start = 0;
        }
#  endif
        self_tag = ((uint64_t)(uint32_t)pid << 32) | (start & 0xffffffffu);
    }
    return self_tag;
}

int
cmp_proc_tag_gone(uint64_t tag, int *gone)
{
    long pid = (long)(tag >> 32);
    *gone = 0;
#  ifdef proc_stat
    char state;
    uint64_t start;
    int err = proc_stat(pid, &state, &start);
    if (err == 0) {
        *gone = state == 'Z' || state == 'X' ||
                (start & 0xffffffffu) != (tag & 0xffffffffu);
        return 0;
    }
    if (err == ENOENT || err == ESRCH) {
        *gone = 1;
        return 0;
    }
    /* no /proc here: what kill() can tell (not zombies) */
#  endif
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
        *gone = 1;
    }
    return 0;
}

#endif /* CMP_POSIX */
