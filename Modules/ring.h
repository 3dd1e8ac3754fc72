/*
 * ring.h -- a queue's shared-memory ring (ring.c): the byte stream of the
 * queue's frames, as its pipe carries them, in a block of shared memory
 * that every process using the queue maps.
 *
 * Why: a message through a pipe costs a write and a read system call (and
 * a wake-up when the reader sleeps): about 1.5 us for a small one here,
 * where copying it costs nanoseconds.  Through the ring, a put copies the
 * frame in and moves the tail; a get copies it out and moves the head; the
 * kernel is entered only to wake a side that sleeps (a futex on a word of
 * the ring, platform sem.h's cmp_addr_wait).
 *
 * One writer and one reader at a time: the queue's writer lock and reader
 * lock serialize them, as they do the pipe's.  The ring is the same byte
 * stream as the pipe (frame.h's framing), so frame.c reads and writes it
 * as a shared pipe, and queue_robust.c's repairs apply unchanged.
 *
 * Pipe mode.  A queue's _reader and _writer are Connections over its pipe
 * that code outside the package reads and writes directly
 * (concurrent.futures waits on a SimpleQueue's _reader).  When such code
 * asks for them, the queue leaves the ring for good (queues.py's
 * _leave_ring): the mode becomes CMP_RING_PIPE, and from then on
 *   - a write goes into the ring while it still holds bytes, else into the
 *     pipe, so that the pipe only ever receives what follows everything
 *     in the ring (a message may start in the ring and end in the pipe:
 *     it is one byte stream);
 *   - a read takes from the ring while it holds bytes, then from the pipe;
 *   - the process that left moves what is in the ring into the pipe
 *     (holding the reader lock; a byte leaves the ring only once it is in
 *     the pipe), so that a reader of the bare pipe sees every message.
 * No lock is needed to leave: a writer that waits for room in the ring
 * (holding the writer lock) gets it as the ring is moved.
 */
#ifndef CMP_RING_H
#define CMP_RING_H

#include "atomic.h"
#include "cmp.h"

/* Bytes of data a queue's ring holds, and of shared memory it takes with
   its header.  256 KiB
   holds four 64 KiB messages in flight and stays in a core's L2 cache;
   1 MiB measured no faster for 64 KiB messages and slower for small ones
   (the reader's copies miss the cache). */
#define CMP_RING_DATA ((size_t)256 << 10)
#define CMP_RING_BYTES (CMP_RING_DATA + sizeof(cmp_ring_hdr))
/* Writes no longer than this go into the ring whole or not at all (as
   PIPE_BUF bytes go into a pipe): queue_robust.c counts on it. */
#define CMP_RING_ATOMIC 512

enum { CMP_RING_ON = 0, CMP_RING_PIPE = 1 };

/* The header at the start of the block; the data follows.  The producer's
   and the consumer's words are a cache line apart. */
typedef struct {
    uint64_t magic;
    uint64_t cap;   /* bytes of data, a power of two */
    uint32_t mode;  /* CMP_RING_ON or CMP_RING_PIPE */
    uint32_t pad0[11];
    uint64_t tail;     /* bytes ever written (writers) */
    uint32_t data_seq; /* futex word: readers' epoch; bit 0: they sleep */
    uint32_t pad_r;
    uint64_t puts;     /* messages ever put (see cmp_ring_count_puts) */
    uint32_t pad1[10];
    uint64_t head;     /* bytes ever read (readers) */
    uint32_t room_seq; /* futex word: writers' epoch; bit 0: they sleep */
    uint32_t pad_w;
    uint64_t gets;     /* messages ever taken */
    uint32_t pad2[10];
} cmp_ring_hdr;

/* A process's hold on a ring.  seen_head and seen_tail are the other
   side's position as this process last read it: positions only grow, so
   an old reading never shows more room (or more bytes) than there is,
   and a side looks at the other's cache line again only when what it
   saw is not enough.  Else every put read the readers' line and every
   get the writers', which the other side wrote meanwhile: a cache miss
   each way per message (the classic single-producer ring's cached
   indices).  Touched only by a holder of the side's lock. */
typedef struct {
    cmp_ring_hdr *h;
    unsigned char *data;
    uint64_t cap;
    uint64_t seen_head; /* writers' */
    uint64_t seen_tail; /* readers' */
} cmp_ring;

/* Attach to the ring in buf (len bytes, 8-aligned), making it when the
   block is fresh (zeroed).  0, or -1 with ValueError set. */
int cmp_ring_attach(cmp_ring *r, void *buf, size_t len);

/* Without the GIL, from here on. */

/* Bytes in the ring now; whether it is still in ring mode. */
uint64_t cmp_ring_used(const cmp_ring *r);
int cmp_ring_on(const cmp_ring *r);

/* Whether the ring has room for n bytes now (a writer, holding the
   writer lock). */
int cmp_ring_has_room(cmp_ring *r, uint64_t n);

/* Copy as much of the pieces as fits: 0 with *sent > 0, or CMP_BUSY when
   nothing went in (a write of at most CMP_RING_ATOMIC bytes goes whole or
   not at all).  Wakes sleeping readers. */
int cmp_ring_writev(cmp_ring *r, const cmp_iobuf *pieces, int count,
                    size_t *sent);

/* Copy out as much as the slots take and the ring holds: 0 with *got > 0,
   or CMP_BUSY when it is empty.  Wakes sleeping writers. */
int cmp_ring_readv(cmp_ring *r, const cmp_iobuf *slots, int count,
                   size_t *got);

/* Wait at most `seconds` (0: just look) until the ring holds bytes
   (for_write == 0) or has room, or it leaves ring mode: *ready = 1 then.
   0, or CMP_INTR. */
int cmp_ring_wait(cmp_ring *r, int for_write, double seconds, int *ready);

/* Wait at most `seconds` until the ring holds more than `have` bytes (or
   it leaves ring mode): *ready = 1 then.  0, or CMP_INTR. */
int cmp_ring_wait_more(cmp_ring *r, uint64_t have, double seconds, int *ready);

/* Whether the frame at the ring's front is all there: 1, 0 (not yet), or
   1 as well when it can never be (longer than the ring: it streams).  The
   caller holds the reader lock, at a message boundary. */
int cmp_ring_frame_whole(cmp_ring *r);

/* Leave ring mode for good and wake every sleeper, so that it looks
   again (any process, any time: see "Pipe mode" above). */
void cmp_ring_leave(cmp_ring *r);

/* Readers (holding the reader lock) moving the ring into the pipe: copy
   up to len bytes from the ring's front without taking them; then take
   n of them. */
size_t cmp_ring_peek(cmp_ring *r, void *buf, size_t len);
void cmp_ring_consume(cmp_ring *r, size_t n);

/* A reader (holding the reader lock) taking `skip` bytes and the n after
   them, those copied into buf, in one move of the head, when the ring
   holds them all: 1; else 0, nothing taken.  Wakes sleeping writers. */
int cmp_ring_take(cmp_ring *r, size_t skip, void *buf, size_t n);

/* A Queue without a maximum size counts its messages here rather than in
   a semaphore (queue.c): put() counts one in, get() one out, each on the
   cache line its side writes anyway, where a semaphore's word went back
   and forth between the two sides on every message (two misses a message:
   about a fifth of a small message's CPU time).  qsize() is the
   difference.  Any process, without the GIL. */
static inline void
cmp_ring_count_puts(cmp_ring *r, int64_t n)
{
    cmp_atomic_add64(&r->h->puts, n);
}
static inline void
cmp_ring_count_gets(cmp_ring *r, int64_t n)
{
    cmp_atomic_add64(&r->h->gets, n);
}
static inline int64_t
cmp_ring_counted(const cmp_ring *r)
{
    uint64_t gets = cmp_atomic_load64(&r->h->gets);
    return (int64_t)(cmp_atomic_load64(&r->h->puts) - gets);
}

/* Which of the two a transfer goes to, with the ring's rule (see "Pipe
   mode"): a write goes to the ring while the ring is on or still holds
   bytes, else to the pipe; a read takes from the ring while it holds
   bytes; an empty ring that is on is waited on. */
static inline int
cmp_ring_writes_here(const cmp_ring *r)
{
    return cmp_ring_on(r) || cmp_ring_used(r) > 0;
}

#endif /* CMP_RING_H */
