/* platform/darwin.h -- macOS helpers that the POSIX files of the platform
 * layer call under #ifdef CMP_DARWIN (darwin_io.c, darwin_shm.c).
 * Conventions as in platform.h: 0 or an errno value.
 */
#ifndef CMP_PLATFORM_DARWIN_H
#define CMP_PLATFORM_DARWIN_H

#include "platform/platform.h"

#ifdef CMP_DARWIN

/* Make a write to `fd` that finds the reader gone fail with EPIPE instead
   of raising SIGPIPE (which kills a process that does not ignore it: an
   embedding host such as LLDB may not).  F_SETNOSIGPIPE covers pipes and
   sockets alike; SO_NOSIGPIPE is the fallback for sockets.  Per
   descriptor: call it on every descriptor a connection or queue writes. */
int cmp_darwin_nosigpipe(int fd);

/* Names of POSIX shared memory segments are at most PSHMNAMLEN (31)
   bytes on macOS, the leading '/' included. */
#  define CMP_DARWIN_SHM_NAME_MAX 31

/* An arena descriptor: a POSIX shared memory object made under a unique
   short name and unlinked at once, so that it is memory, not a file in
   $TMPDIR, and no name reaches it.  Close-on-exec. */
int cmp_darwin_shm_anonymous(int *fd);

/* Give the new segment `fd` its size.  macOS sets the size of a shared
   memory object once only (a second ftruncate fails with EINVAL): when the
   object already has at least `size` bytes that is success.  (fstat then
   reports the size rounded up to whole pages.) */
int cmp_darwin_shm_resize(int fd, size_t size);

#endif /* CMP_DARWIN */

#endif /* CMP_PLATFORM_DARWIN_H */
