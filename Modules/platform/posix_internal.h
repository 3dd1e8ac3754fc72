/* platform/posix_internal.h -- helpers shared by the POSIX files of the
   platform layer (posix_*.c, darwin_*.c), defined once in posix_common.c.
   Not for concern files: they go through platform.h. */
#ifndef CMP_PLATFORM_POSIX_INTERNAL_H
#define CMP_PLATFORM_POSIX_INTERNAL_H

#include "platform/platform.h"

#ifdef CMP_POSIX

/* Set FD_CLOEXEC on fd: 0 or errno. */
int cmp_posix_set_cloexec(int fd);

/* The multiprocessing exit code of a waitpid() status: the exit code, or
   -signal for a child a signal killed. */
int cmp_posix_exit_code(int status);

/* cmp_spawn_library_of (spawn.h) with the one part that differs by OS
   passed in: dladdr() finds the image holding addr, then
   `is_program(addr, image_base)` tells whether that image is the main
   program's own (*in_program = 1, no path) rather than a library, whose
   path goes to buf. */
int cmp_posix_library_of(const void *addr,
                         int (*is_program)(const void *addr,
                                           const void *image_base),
                         char *buf, size_t size, int *in_program);

#endif /* CMP_POSIX */

#endif /* CMP_PLATFORM_POSIX_INTERNAL_H */
