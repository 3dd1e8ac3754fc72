/* platform/darwin_sem.c -- the parts of named semaphores where macOS
 * differs from posix_sem.c: it has no sem_timedwait (timed waits poll
 * sem_trywait with growing sleeps) and sem_getvalue always fails (values
 * are unknown; emptiness is probed by a take-and-give-back). */
#include "platform/platform.h"

#ifdef CMP_DARWIN
#  include <errno.h>
#  include <time.h>

/* Longest single sleep between two polls of a timed wait (seconds). */
#  define CMP_DARWIN_POLL_MAX 0.005

int
cmp_sem_wait_for(cmp_sem_t sem, double seconds)
{
    double deadline = cmp_monotonic() + (seconds > 0.0 ? seconds : 0.0);
    double pause = 0.00005;
    for (;;) {
        if (sem_trywait(sem) == 0) {
            return CMP_OK;
        }
        if (errno == EINTR) {
            return CMP_INTR;
        }
        if (errno != EAGAIN) {
            return errno;
        }
        double left = deadline - cmp_monotonic();
        if (left <= 0.0) {
            return CMP_BUSY;
        }
        double nap = pause < left ? pause : left;
        struct timespec ts;
        ts.tv_sec = (time_t)nap;
        ts.tv_nsec = (long)((nap - (double)ts.tv_sec) * 1e9);
        if (nanosleep(&ts, NULL) != 0 && errno == EINTR) {
            return CMP_INTR;
        }
        pause *= 2.0;
        if (pause > CMP_DARWIN_POLL_MAX) {
            pause = CMP_DARWIN_POLL_MAX;
        }
    }
}

int
cmp_sem_create_in(void *mem, size_t len, int value, cmp_sem_t *out)
{
    (void)mem;
    (void)len;
    (void)value;
    (void)out;
    return ENOSYS; /* sem_init() is not implemented */
}

int
cmp_sem_getvalue(cmp_sem_t sem, int *value)
{
    (void)sem;
    *value = 0;
    return ENOSYS;
}

int
cmp_sem_is_zero(cmp_sem_t sem, int *zero)
{
    if (sem_trywait(sem) == 0) {
        *zero = 0;
        return sem_post(sem) == 0 ? 0 : errno;
    }
    if (errno == EAGAIN) {
        *zero = 1;
        return 0;
    }
    return errno;
}

int
cmp_sem_post(cmp_sem_t sem, int bound)
{
    /* Without a readable value only a bound of 1 (a lock) can be checked:
       a unit that can be taken means the lock was not held. */
    if (bound == 1) {
        if (sem_trywait(sem) == 0) {
            if (sem_post(sem) != 0) {
                return errno;
            }
            return CMP_OVERFLOW;
        }
        if (errno != EAGAIN) {
            return errno;
        }
    }
    return sem_post(sem) == 0 ? 0 : errno;
}

#endif /* CMP_DARWIN */
