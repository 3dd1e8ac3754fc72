/* platform/posix_common.c -- helpers of the POSIX layer shared by every
   concern, and the internal ones of posix_internal.h. */
#include "platform/platform.h"
#include "platform/posix_internal.h"

#ifdef CMP_POSIX
#  include <dlfcn.h>
#  include <errno.h>
#  include <fcntl.h>
#  include <pthread.h>
#  include <sched.h>
#  include <stdlib.h>
#  include <string.h>
#  include <time.h>
#  include <sys/types.h>
#  include <sys/wait.h>
#  include <unistd.h>

int
cmp_posix_set_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        return errno;
    }
    return 0;
}

int
cmp_posix_exit_code(int status)
{
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return -WTERMSIG(status);
    }
    /* Not reachable without WUNTRACED/WCONTINUED; report it raw. */
    return status;
}

int
cmp_posix_library_of(const void *addr,
                     int (*is_program)(const void *addr,
                                       const void *image_base),
                     char *buf, size_t size, int *in_program)
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
    if (is_program(addr, info.dli_fbase)) {
        *in_program = 1;
        return 0;
    }
    if (strlen(info.dli_fname) >= size) {
        return ENAMETOOLONG;
    }
    strcpy(buf, info.dli_fname);
    return 0;
}

double
cmp_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int
cmp_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 4096 ? 4096 : (int)n);
}

int
cmp_runnable_threads(int *count)
{
#  ifdef __linux__
    /* "0.99 0.81 0.70 3/161 1204": runnable/total after three averages */
    char buf[128];
    int fd, err = 0;
    do {
        fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return errno;
    }
    ssize_t got;
    do {
        got = read(fd, buf, sizeof(buf) - 1);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        err = errno;
    }
    (void)close(fd);
    if (err != 0) {
        return err;
    }
    buf[got] = '\0';
    const char *p = buf;
    for (int fields = 0; fields < 3; fields++) {
        p = strchr(p, ' ');
        if (p == NULL) {
            return EINVAL;
        }
        p++;
    }
    char *end;
    long n = strtol(p, &end, 10);
    if (end == p || *end != '/' || n < 0) {
        return EINVAL;
    }
    *count = n > 1000000 ? 1000000 : (int)n;
    return 0;
#  else
    (void)count;
    return ENOSYS;
#  endif
}

void
cmp_yield(void)
{
    (void)sched_yield();
}

void
cmp_sleep(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    (void)nanosleep(&ts, NULL);
}

/* A default mutex with a static initialiser cannot fail to lock or unlock
   when used in pairs; a failure means memory corruption, so abort. */
static pthread_mutex_t process_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t process_lock_once = PTHREAD_ONCE_INIT;

static void
process_lock_take(void)
{
    if (pthread_mutex_lock(&process_lock) != 0) {
        abort();
    }
}

static void
process_lock_give(void)
{
    if (pthread_mutex_unlock(&process_lock) != 0) {
        abort();
    }
}

/* Around fork the forking thread holds the lock, so that the child never
   inherits it held by a thread it does not have. */
static void
process_lock_at_fork(void)
{
    if (pthread_atfork(process_lock_take, process_lock_give,
                       process_lock_give) != 0) {
        abort();
    }
}

void
cmp_process_lock(void)
{
    if (pthread_once(&process_lock_once, process_lock_at_fork) != 0) {
        abort();
    }
    process_lock_take();
}

void
cmp_process_unlock(void)
{
    process_lock_give();
}
#endif
