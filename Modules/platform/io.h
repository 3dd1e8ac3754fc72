/* platform/io.h -- the OS layer of the wire: byte streams over one handle
 * (socket or pipe end) for connections, the never-blocking transfers on
 * the pipe ends a queue shares between processes, readiness waits, and
 * passing descriptors between processes.
 *
 * Every function returns 0 or a platform error code and never touches
 * Python objects, so callers may run them with the GIL released.  None of
 * them retries on EINTR: the caller holds the policy (it has to run the
 * Python signal handlers between attempts).
 */
#ifndef CMP_PLATFORM_IO_H
#define CMP_PLATFORM_IO_H

#ifdef CMP_WINDOWS
#  include <winsock2.h>
#endif

/* Handles as Python sees them: a file descriptor on POSIX, the integer
   value of a SOCKET or HANDLE on Windows.  cmp_io_handle_from_value
   returns CMP_BADHANDLE for a value that cannot be a handle. */
long long cmp_io_handle_value(cmp_handle_t h);
int cmp_io_handle_from_value(long long value, cmp_handle_t *h);

/* One piece of a gathered write, or (base cast to writable memory by
   the caller that owns it) of a scattered read. */
typedef struct {
    const void *base;
    size_t len;
} cmp_iobuf;

/* The most pieces one gathered write or scattered read takes at once
   (the rest waits for the next call). */
#define CMP_IO_MAX_PIECES 64

/* Handle kinds, as far as the connection code cares. */
enum {
    CMP_IO_KIND_UNKNOWN = 0,
    CMP_IO_KIND_SOCKET = 1,
    CMP_IO_KIND_OTHER = 2
};

/* Classify `fd` (CMP_IO_KIND_SOCKET or CMP_IO_KIND_OTHER). */
int cmp_io_kind(cmp_handle_t fd, int *kind);

/* One read of at most `len` bytes into `buf`.  *got = 0 means end of file.
   With nowait != 0 the call must not block: it returns CMP_BUSY
   when no byte is there (for handles where that cannot be promised it
   returns CMP_BUSY without reading, and the caller falls back to
   a blocking read).  A
   blocking read may wait until all `len` bytes are there (sockets), but
   returns early at end of file or when a signal interrupts it. */
int cmp_io_read(cmp_handle_t fd, int kind, void *buf, size_t len, int nowait,
                size_t *got);

/* One gathered write of the `count` pieces; *sent receives the number of
   bytes the system took (possibly fewer than asked).  nowait as above. */
int cmp_io_writev(cmp_handle_t fd, int kind, const cmp_iobuf *pieces,
                  int count, int nowait, size_t *sent);

/* The number of bytes that a read could take right now without blocking. */
int cmp_io_pending(cmp_handle_t fd, size_t *avail);

/* Wait at most `timeout` seconds (< 0: forever) for `fd` to be readable,
   at end of file or in error.  *ready = 1 when it is.  CMP_BADHANDLE
   when the handle is not open. */
int cmp_io_wait_readable(cmp_handle_t fd, double timeout, int *ready);

/* Wait at most `timeout` seconds (< 0: forever) until at least one of the
   `count` handles is readable (or at end of file, or a process sentinel
   is signalled); ready[i] is set to 1 for each one that is, 0 otherwise.
   *nready receives how many are. */
int cmp_io_wait_many(const cmp_handle_t *handles, size_t count, double timeout,
                     unsigned char *ready, size_t *nready);

/* Close a handle (EINTR counts as closed). */
int cmp_io_close(cmp_handle_t fd);

/* Physical memory of the machine in bytes (0 when unknown): no message can
   be longer than this and still be received. */
uint64_t cmp_io_physical_memory(void);

/* The most pieces one gathered write accepts. */
int cmp_io_max_pieces(void);

/* Descriptor passing over a local (AF_UNIX) stream socket.
   cmp_io_sendfds sends `msglen` (>= 1) bytes of `msg` with the `nfds`
   descriptors attached.  cmp_io_recvfds receives at most `msglen` bytes
   into `msg` (*got, 0 at end of file) and up to `maxfds` descriptors into
   `fds` (*nfds); *truncated = 1 when more descriptors were sent than fit
   (those that did arrive are still returned, and must be closed).
   POSIX only: Windows duplicates handles into the peer instead. */
#ifdef CMP_POSIX
int cmp_io_sendfds(cmp_handle_t sock, const int *fds, size_t nfds,
                   const void *msg, size_t msglen, size_t *sent);
int cmp_io_recvfds(cmp_handle_t sock, int *fds, size_t maxfds, size_t *nfds,
                   void *msg, size_t msglen, size_t *got, int *truncated);
#endif

/* A Windows pipe HANDLE (named or anonymous): read and written with
   overlapped I/O that Ctrl-C cancels (win32_io.c).  cmp_io_kind gives it
   on Windows only; code that is not about sockets treats it as
   CMP_IO_KIND_OTHER. */
enum { CMP_IO_KIND_PIPE = 3 };

/* ---- the pipe ends of a queue -------------------------------------------

   A queue's pipe is shared by every process using the queue, so its
   blocking mode cannot be changed (O_NONBLOCK belongs to the open file
   description, which all of them share).  These calls ask the kernel not
   to block for this one call instead (RWF_NOWAIT on Linux), and fall back
   to a readiness check followed by a transfer small enough not to block
   where that is not available (posix_io.c; win32_io.c sizes transfers from
   what the pipe or socket says fits).  They take any handle kind. */

/* A gathered write.  nowait: as much as the handle takes without
   blocking (CMP_BUSY when nothing could go); else one write that
   may wait until the handle takes some bytes.  *sent = bytes written. */
int cmp_io_shared_writev(cmp_handle_t h, const cmp_iobuf *pieces, int count,
                         int nowait, size_t *sent);

/* A scattered read, in order, of at most what the handle holds now,
   without blocking: 0 with *got > 0; 0 with *got = 0 at end of file (every
   writer has closed); CMP_BUSY when it is empty. */
int cmp_io_shared_readv(cmp_handle_t h, const cmp_iobuf *slots, int count,
                        size_t *got);

/* Wait at most `seconds` (0: just look) until the handle is readable
   (for_write == 0) or writable; *ready = 1 when it is (or is at end of
   file / broken), 0 on timeout. */
int cmp_io_shared_wait(cmp_handle_t h, int for_write, double seconds,
                       int *ready);

/* Ask for a pipe buffer of at least `want` bytes, best effort: the pipe
   keeps its size where the platform cannot or may not change it (or it
   is already that large).  Never fails: returns the size now in force
   where the platform can tell, else 0. */
size_t cmp_io_pipe_grow(cmp_handle_t h, size_t want);

#endif
