/* platform/posix_sem.c -- named POSIX semaphores (see sem.h).
 *
 * Linux uses everything here.  macOS shares the naming and the non-blocking
 * calls; its waits, posts and value queries live in darwin_sem.c. */
#include "platform/platform.h"

#ifdef CMP_POSIX
#  include <errno.h>
#  include <fcntl.h>
#  include <math.h>
#  include <time.h>

int
cmp_sem_create(const char *name, int value, int maxvalue, cmp_sem_t *out)
{
    (void)maxvalue; /* POSIX semaphores have no bound of their own */
    sem_t *sem = sem_open(name, O_CREAT | O_EXCL, 0600, (unsigned int)value);
    if (sem == SEM_FAILED) {
        return errno;
    }
    *out = sem;
    return 0;
}

int
cmp_sem_reopen(const char *name, cmp_sem_t inherited, cmp_sem_t *out)
{
    if (name == NULL) {
        /* Only meaningful in a forked child: the address is the parent's
           mapping, which the child shares. */
        *out = inherited;
        return 0;
    }
    sem_t *sem = sem_open(name, 0);
    if (sem == SEM_FAILED) {
        return errno;
    }
    *out = sem;
    return 0;
}

int
cmp_sem_close(cmp_sem_t sem)
{
    return sem_close(sem) == 0 ? 0 : errno;
}

int
cmp_sem_unlink(const char *name)
{
    return sem_unlink(name) == 0 ? 0 : errno;
}

/* The result of a sem_*wait() call that returned rc, in sem.h's terms. */
static int
wait_result(int rc)
{
    if (rc == 0) {
        return CMP_OK;
    }
    switch (errno) {
    case ETIMEDOUT:
    case EAGAIN:
        return CMP_BUSY;
    case EINTR:
        return CMP_INTR;
    default:
        return errno;
    }
}

int
cmp_sem_trywait(cmp_sem_t sem)
{
    return wait_result(sem_trywait(sem));
}

/* sem_wait is never restarted after a signal handler (whatever
   SA_RESTART says), on Linux and macOS alike: a signal always ends it. */
int
cmp_sem_wait(cmp_sem_t sem)
{
    return wait_result(sem_wait(sem));
}

#  ifndef CMP_DARWIN

int
cmp_sem_create_in(void *mem, size_t len, int value, cmp_sem_t *out)
{
    if (len < sizeof(sem_t) || ((uintptr_t)mem % 8) != 0) {
        return EINVAL;
    }
    if (sem_init((sem_t *)mem, 1, (unsigned int)value) != 0) {
        return errno;
    }
    *out = (sem_t *)mem;
    return 0;
}

/* An absolute time `seconds` from now on `clock`. */
static void
deadline_after(clockid_t clock, double seconds, struct timespec *ts)
{
    clock_gettime(clock, ts);
    double whole = floor(seconds);
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

/* glibc 2.30 added sem_clockwait, which takes a CLOCK_MONOTONIC deadline:
   immune to wall-clock jumps.  Elsewhere each (short) slice is measured on
   the real-time clock; the caller keeps the overall deadline monotonic. */
#    if defined(__GLIBC__) &&                                                 \
        (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#      define CMP_USE_SEM_CLOCKWAIT 1
#    endif

int
cmp_sem_wait_for(cmp_sem_t sem, double seconds)
{
    struct timespec until;
    int rc;
    if (seconds < 0.0) {
        seconds = 0.0;
    }
#    ifdef CMP_USE_SEM_CLOCKWAIT
    deadline_after(CLOCK_MONOTONIC, seconds, &until);
    rc = sem_clockwait(sem, CLOCK_MONOTONIC, &until);
#    else
    deadline_after(CLOCK_REALTIME, seconds, &until);
    rc = sem_timedwait(sem, &until);
#    endif
    return wait_result(rc);
}

int
cmp_sem_getvalue(cmp_sem_t sem, int *value)
{
    int v;
    if (sem_getvalue(sem, &v) != 0) {
        return errno;
    }
    /* Some systems report minus the number of waiters. */
    *value = v < 0 ? 0 : v;
    return 0;
}

int
cmp_sem_is_zero(cmp_sem_t sem, int *zero)
{
    int v = 0;
    int rc = cmp_sem_getvalue(sem, &v);
    if (rc == 0) {
        *zero = (v == 0);
    }
    return rc;
}

int
cmp_sem_post(cmp_sem_t sem, int bound)
{
    if (bound >= 0) {
        /* Not airtight against a concurrent post, as in the stdlib: the
           check only catches the ordinary over-release. */
        int v;
        if (sem_getvalue(sem, &v) != 0) {
            return errno;
        }
        if (v >= bound) {
            return CMP_OVERFLOW;
        }
    }
    return sem_post(sem) == 0 ? 0 : errno;
}

#  endif /* !CMP_DARWIN */

#  if defined(__linux__)
#    include <linux/futex.h>
#    include <sys/syscall.h>
#    include <unistd.h>

int
cmp_addr_wait_available(void)
{
    return 1;
}

int
cmp_addr_wait(uint32_t *addr, uint32_t expected, double seconds)
{
    struct timespec ts, *tsp = NULL;
    if (seconds >= 0.0) {
        ts.tv_sec = (time_t)seconds;
        ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
        tsp = &ts;
    }
    /* shared futex: the word is in a mapping other processes share */
    long r = syscall(SYS_futex, addr, FUTEX_WAIT, expected, tsp, NULL, 0);
    if (r == 0) {
        return 0;
    }
    switch (errno) {
    case EAGAIN:
        return 0; /* the word had changed already */
    case ETIMEDOUT:
        return CMP_BUSY;
    default:
        return errno;
    }
}

void
cmp_addr_wake(uint32_t *addr)
{
    (void)syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

#  else /* macOS */

int
cmp_addr_wait_available(void)
{
    return 0;
}

int
cmp_addr_wait(uint32_t *addr, uint32_t expected, double seconds)
{
    (void)addr;
    (void)expected;
    (void)seconds;
    return ENOSYS;
}

void
cmp_addr_wake(uint32_t *addr)
{
    (void)addr;
}

#  endif

#endif /* CMP_POSIX */
