/*
 * frame.h -- the one wire layer (frame.c): the frame header, reading
 * exactly n bytes, writing every byte of a gathered message, and the
 * spin-then-sleep wait for a message, for connections and queues alike.
 *
 * Wire format (the stdlib's Connection framing): a 4-byte big-endian
 * signed length, or -1 followed by an 8-byte big-endian unsigned length
 * for payloads longer than 2**31-1, then the payload.  A reader takes
 * exactly the bytes of one frame, never more, because several processes
 * may share the reading end.
 *
 * A cmp_wire names one handle and how to move bytes over it: a
 * connection's own handle (kind CMP_IO_KIND_SOCKET / _OTHER / _PIPE: the
 * first try does not block, waits are blocking reads after a readiness
 * check), or the pipe end a queue shares with other processes
 * (CMP_WIRE_SHARED: every transfer is one that cannot block, platform
 * io.h's cmp_io_shared_*).
 */
#ifndef CMP_FRAME_H
#define CMP_FRAME_H

#include "cmp.h"
#include "spin.h"
#include "ring.h"

/* ---- the header --------------------------------------------------------- */

#define CMP_FRAME_HEADER_MAX 12

/* The header for a payload of n bytes into h (CMP_FRAME_HEADER_MAX bytes
   of room); returns its length, 4 or 12. */
size_t cmp_frame_header(unsigned char *h, uint64_t n);

enum { CMP_FRAME_MORE = 1, CMP_FRAME_BAD = 2 };

/* Decode the header in h, of which `have` bytes are there (4, then 12
   for a long one).  0 with *size set; CMP_FRAME_MORE when h[0..4) is the
   -1 marker and have == 4 (read 8 more bytes to h + 4, call again with
   12); CMP_FRAME_BAD for a negative length that is not the marker (*size
   then holds the 32 bits as read, for the message). */
int cmp_frame_decode(const unsigned char *h, size_t have, uint64_t *size);

/* ---- moving bytes ------------------------------------------------------- */

/* The kind of a queue's shared pipe end (beside platform io.h's kinds). */
#define CMP_WIRE_SHARED 100

typedef struct cmp_wire cmp_wire;

/* A shared pipe's reader has waited a slice (CMP_WAIT_SLICE) for bytes
   that did not come, in the middle of a message or not: the queue looks
   whether a writer died (queue_robust.c).  Called with the GIL held; 0 to
   wait on, -1 with an exception set to give up the read. */
typedef int (*cmp_wire_stalled)(void *ctx, int mid_message);

struct cmp_wire {
    cmp_handle_t fd;
    int kind;          /* CMP_IO_KIND_* or CMP_WIRE_SHARED */
    cmp_spin *spin;    /* the owner's spin state (spin.h), or NULL */
    char *waited;      /* NULL, or the owner's "the last message had to
                          be waited for" flag */
    /* shared pipes only (NULL elsewhere): */
    uint64_t *left;    /* the message being read, in shared memory: a
                          count of bytes still to read (each read takes
                          what it got off), or, with CMP_WIRE_LEFT_AT, the
                          ring position where it ends (see below) */
    cmp_wire_stalled stalled;
    void *stalled_ctx;
    cmp_ring *ring; /* the queue's shared-memory ring (ring.h), or NULL:
                       transfers go through it while its rule says so */
};

/* A reader's `left` word with this bit set holds the ring position (the
   count of bytes ever read from the ring) at which the message being read
   ends.  It is written before the header is taken from the ring, and is
   not touched again while the message comes from the ring, so a reader
   killed at any instant leaves a word that says exactly where the next
   message starts.  (A count, taken off after each read, is off by that
   read's bytes when the reader dies between the two; readers SIGKILLed
   at random while a queue moved messages hit that in a few kills of a
   hundred, and the next reader took payload bytes for a header.)  It
   becomes a count if the rest of the message comes from the pipe. */
#define CMP_WIRE_LEFT_AT ((uint64_t)1 << 63)

/* The bytes of the message being read that are still to read, from a
   `left` word of either kind (the ring: its reader's, or NULL). */
uint64_t cmp_wire_left_bytes(uint64_t left, const cmp_ring *ring);

/* Flags of cmp_wire_read. */
enum {
    CMP_WIRE_START = 1,   /* the start of a message: the wait for it spins
                             first and is sliced */
    CMP_WIRE_STARTED = 2, /* part of the message was read before: an end
                             of file is an OSError, never EOFError */
};

/* Fill the slots (a scattered read; their bases are writable memory of
   the caller) completely, in order.  The slots array is consumed.  0, or
   -1 with an exception set: EOFError at an end of file before any byte
   (without CMP_WIRE_STARTED), OSError "got end of file during message"
   after some. */
int cmp_wire_read(cmp_wire *w, cmp_iobuf *slots, int count, int flags);

/* Read and decode one header: 0 with *size set, CMP_FRAME_BAD (no
   exception: the caller reports it as it must) or -1 with an exception.
   `ext_flags` are the cmp_wire_read flags for the 8 bytes of a long
   header. */
int cmp_wire_read_header(cmp_wire *w, int ext_flags, uint64_t *size);

/* A whole message of at most `cap` bytes that is in a shared wire's ring
   (in ring mode) now: its header and body taken at once, the body copied
   into buf, its length into *len: 1.  0 when it is not there whole, or
   longer, or the wire has no ring (nothing taken: read it with the two
   calls above).  No wait, no error; the reader lock held. */
int cmp_wire_take_whole(cmp_wire *w, void *buf, size_t cap, size_t *len);

/* Write every byte of the pieces (the caller keeps them alive; the array
   is consumed): the first try keeps the GIL, the rest waits with the GIL
   released.  0, or -1 with an exception set. */
int cmp_wire_write_all(cmp_wire *w, cmp_iobuf *pieces, int count);

/* The same for a caller that runs without the GIL (a feeder thread, where
   no signal handler runs): EINTR is retried.  0, or a platform error
   code; *sent = bytes written either way. */
int cmp_wire_write_all_nogil(cmp_wire *w, cmp_iobuf *pieces, int count,
                             size_t *sent);

/* One transfer of a queue's shared end that cannot block (the ring's or
   the pipe's, by the ring's rule: platform io.h's cmp_io_shared_writev
   for the arguments and results). */
int cmp_wire_shared_writev(const cmp_wire *w, const cmp_iobuf *pieces,
                           int count, int nowait, size_t *sent);

/* Wait until the handle is readable (or at end of file) or the deadline
   passes: one look with the GIL held, then sliced waits (wait.h).
   1 ready, 0 timed out, -1 with an exception set. */
int cmp_wire_poll(cmp_wire *w, const cmp_deadline *deadline);

/* Drop `sent` bytes from the front of pieces[*first..count): *first moves
   past the pieces written (and empty ones), the next one is trimmed. */
void cmp_iobuf_advance(cmp_iobuf *pieces, int count, int *first, size_t sent);

#endif /* CMP_FRAME_H */
