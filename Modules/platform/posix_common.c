/* platform/posix_common.c -- helpers of the POSIX layer shared by every
   concern. */
#include "platform/platform.h"

#ifdef CMP_POSIX
#include <sched.h>
#include <time.h>
#include <unistd.h>

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

void
cmp_yield(void)
{
    (void)sched_yield();
}
#endif
