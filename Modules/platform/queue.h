/* platform/queue.h -- OS layer for the queues (queue.c): reads and writes
 * on the queue's pipe that never block, and short readiness waits.
 *
 * A queue's pipe is shared by every process using the queue, so its
 * blocking mode cannot be changed (O_NONBLOCK belongs to the open file
 * description, which all of them share).  These calls ask the kernel not
 * to block for this one call instead (RWF_NOWAIT on Linux), and fall back
 * to a readiness check followed by a transfer small enough not to block
 * where that is not available.
 *
 * Results: CMP_QPIPE_OK, or one of the small negative values below, or a
 * platform error code (> 0) for cmp_raise_oserror().  No function retries
 * on EINTR; they report CMP_QPIPE_INTR and the caller runs the signal
 * handlers.  None of them touches Python objects.
 */
#ifndef CMP_PLATFORM_QUEUE_H
#define CMP_PLATFORM_QUEUE_H

#include "platform/platform.h"

enum {
    CMP_QPIPE_OK = 0,
    CMP_QPIPE_AGAIN = -1, /* nothing could move without blocking / timeout */
    CMP_QPIPE_INTR = -2,  /* a signal arrived: run the handlers, retry */
    CMP_QPIPE_EOF = -3,   /* read: every writer has closed the pipe */
};

/* One piece of a gathered write. */
typedef struct {
    const void *base;
    size_t len;
} cmp_qpipe_piece;

/* The most pieces a gathered write takes at once. */
#define CMP_QPIPE_MAX_PIECES 64

/* The platform's handle for the integer a Connection's fileno() returns. */
#ifdef CMP_WINDOWS
#  define CMP_QPIPE_HANDLE(v) ((cmp_handle_t)(intptr_t)(v))
#else
#  define CMP_QPIPE_HANDLE(v) ((cmp_handle_t)(v))
#endif

/* Write as much of the pieces as the pipe takes without blocking;
   *done = bytes written (0 when the pipe is full: still CMP_QPIPE_OK). */
int cmp_qpipe_write_nowait(cmp_handle_t h, const cmp_qpipe_piece *pieces,
                           int count, size_t *done);

/* One gathered write that may block until the pipe takes some bytes;
   *done = bytes written.  CMP_QPIPE_OK, CMP_QPIPE_INTR or an error. */
int cmp_qpipe_write_wait(cmp_handle_t h, const cmp_qpipe_piece *pieces,
                         int count, size_t *done);

/* Read at most `len` bytes of what is in the pipe now, without blocking:
   CMP_QPIPE_OK with *done > 0, CMP_QPIPE_AGAIN (empty), CMP_QPIPE_EOF,
   CMP_QPIPE_INTR or an error. */
int cmp_qpipe_read_nowait(cmp_handle_t h, void *buf, size_t len,
                          size_t *done);

/* Wait at most `seconds` until the pipe is readable (for_write == 0) or
   writable: CMP_QPIPE_OK when it is (or is at end of file / broken),
   CMP_QPIPE_AGAIN on timeout, CMP_QPIPE_INTR or an error. */
int cmp_qpipe_wait(cmp_handle_t h, int for_write, double seconds);

/* One piece of a scattered read. */
typedef struct {
    void *base;
    size_t len;
} cmp_qpipe_slot;

#ifndef CMP_WINDOWS
/* Read into the slots, in order, as much as the pipe holds now (one
   system call where the platform has a scattered read): as
   cmp_qpipe_read_nowait, with *done counted over all the slots. */
int cmp_qpipe_readv_nowait(cmp_handle_t h, const cmp_qpipe_slot *slots,
                           int count, size_t *done);

/* Ask for a pipe buffer of at least `want` bytes, best effort: the pipe
   keeps its size where the platform cannot or may not change it (or it
   is already that large).  Never fails: returns the size now in force
   where the platform can tell, else 0. */
size_t cmp_qpipe_grow(cmp_handle_t h, size_t want);
#else
/* win32_queue.c has no scattered read or resizable pipe buffer (yet):
   the slots are read one call each, and the size stays as it is. */
static inline int
cmp_qpipe_readv_nowait(cmp_handle_t h, const cmp_qpipe_slot *slots,
                       int count, size_t *done)
{
    *done = 0;
    for (int i = 0; i < count; i++) {
        size_t got = 0;
        if (slots[i].len == 0) {
            continue;
        }
        int r = cmp_qpipe_read_nowait(h, slots[i].base, slots[i].len, &got);
        if (r != CMP_QPIPE_OK) {
            return *done > 0 ? CMP_QPIPE_OK : r;
        }
        *done += got;
        if (got < slots[i].len) {
            break;
        }
    }
    return CMP_QPIPE_OK;
}

static inline size_t
cmp_qpipe_grow(cmp_handle_t h, size_t want)
{
    (void)h;
    (void)want;
    return 0;
}
#endif

#endif /* CMP_PLATFORM_QUEUE_H */
