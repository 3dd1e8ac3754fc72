/* platform/posix_common.c -- helpers of the POSIX layer shared by every
   concern. */
#include "platform/platform.h"

#ifdef CMP_POSIX
#include <time.h>

double
cmp_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
#endif
