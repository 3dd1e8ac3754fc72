/*
 * ring.c -- a queue's shared-memory ring (see ring.h).
 *
 * The sleep protocol, for a reader (a writer waiting for room is the
 * mirror image, on head/room_seq):
 *
 *   reader: v = (data_seq |= 1) (an atomic or: a full barrier);
 *           if tail != head: don't sleep; else futex_wait(&data_seq, v)
 *   writer: tail = new (release); full fence; w = data_seq;
 *           if w & 1 and data_seq goes w -> (w & ~1) + 2 (one swap):
 *           futex_wake(&data_seq)
 *
 * Either the writer sees the bit (and moves data_seq on, so that a reader
 * that has not slept yet does not), or the reader sees the new tail: the
 * two full barriers order "announce, then look" on both sides.  The bit
 * is the epoch's: the first write after readers announced clears it and
 * wakes them all, and the writes after it, until a reader sleeps again,
 * make no system call.  (With a count of sleepers in its place, every
 * write woke again until the woken reader ran and counted itself out.)
 * A writer pays one load of data_seq per write when nobody sleeps.  A
 * reader whose wait timed out, or that was killed asleep, leaves the bit
 * set: one needless wake-up, nothing worse.
 */
#include "ring.h"
#include "atomic.h"
#include "frame.h"

#include <string.h>

#define RING_MAGIC 0x32676e6972706d63ull /* "cmpring2" */

int
cmp_ring_attach(cmp_ring *r, void *buf, size_t len)
{
    if (((uintptr_t)buf & 7u) != 0 || len < sizeof(cmp_ring_hdr) + 4096) {
        PyErr_SetString(PyExc_ValueError,
                        "ring: block too small or unaligned");
        return -1;
    }
    cmp_ring_hdr *h = (cmp_ring_hdr *)buf;
    uint64_t cap = 4096;
    while (cap * 2 <= len - sizeof(cmp_ring_hdr)) {
        cap *= 2;
    }
    if (cmp_atomic_load64(&h->magic) == 0) {
        /* a fresh (zeroed) block: made by the process that made the
           queue, before any other can see it */
        h->cap = cap;
        cmp_atomic_store64(&h->magic, RING_MAGIC);
    }
    else if (h->magic != RING_MAGIC || h->cap != cap) {
        PyErr_SetString(PyExc_ValueError, "ring: not a queue's ring");
        return -1;
    }
    r->h = h;
    r->data = (unsigned char *)buf + sizeof(cmp_ring_hdr);
    r->cap = cap;
    r->seen_head = r->seen_tail = 0; /* (no more than the real ones) */
    return 0;
}

/* The room for a writer at `tail` (writers own the tail) by the head it
   saw last, read again when that shows less than `want` (or an old value
   is older than a ring's worth of bytes). */
static uint64_t
room_at(cmp_ring *r, uint64_t tail, uint64_t want)
{
    uint64_t used = tail - r->seen_head;
    if (used > r->cap || r->cap - used < want) {
        r->seen_head = cmp_atomic_load64(&r->h->head);
        used = tail - r->seen_head;
    }
    return r->cap - used;
}

/* The bytes there for a reader at `head` (readers own the head) by the
   tail it saw last, read again when that shows fewer than `want`. */
static uint64_t
avail_at(cmp_ring *r, uint64_t head, uint64_t want)
{
    uint64_t avail = r->seen_tail - head;
    if (avail > r->cap || avail < want) {
        r->seen_tail = cmp_atomic_load64(&r->h->tail);
        avail = r->seen_tail - head;
    }
    return avail;
}

int
cmp_ring_has_room(cmp_ring *r, uint64_t n)
{
    return room_at(r, cmp_atomic_load64(&r->h->tail), n) >= n;
}

uint64_t
cmp_ring_used(const cmp_ring *r)
{
    return cmp_atomic_load64(&r->h->tail) - cmp_atomic_load64(&r->h->head);
}

int
cmp_ring_on(const cmp_ring *r)
{
    return cmp_atomic_load32(&r->h->mode) == CMP_RING_ON;
}

/* The waking side of the protocol at the top of this file, after the
   position moved and a full fence, with w the futex word read then and
   its bit set: move the epoch on and wake its sleepers.  (A failed swap:
   another waker moved it on and woke them.) */
static void
wake_epoch(uint32_t *seq, uint32_t w)
{
    if (cmp_atomic_swap32(seq, w, (w & ~1u) + 2u)) {
        cmp_addr_wake(seq);
    }
}

static void
wake_readers(cmp_ring *r)
{
    cmp_atomic_fence();
    uint32_t w = cmp_atomic_load32(&r->h->data_seq);
    if ((w & 1u) != 0) {
        wake_epoch(&r->h->data_seq, w);
    }
}

/* A writer that waits for room waits until the ring is half empty, and
   readers wake it only then: else, with a writer faster than the reader,
   every read would pay a wake-up system call and every write a sleep
   (measured: 560k small messages/s through the feeder, against 2.1M/s
   for a writer that sleeps until half the ring is free). */
static int
room_for_writer(const cmp_ring *r)
{
    return cmp_ring_used(r) <= r->cap / 2;
}

static void
wake_writers(cmp_ring *r)
{
    cmp_atomic_fence();
    uint32_t w = cmp_atomic_load32(&r->h->room_seq);
    if ((w & 1u) != 0 && room_for_writer(r)) {
        wake_epoch(&r->h->room_seq, w);
    }
}

int
cmp_ring_writev(cmp_ring *r, const cmp_iobuf *pieces, int count, size_t *sent)
{
    cmp_ring_hdr *h = r->h;
    const uint64_t tail = h->tail; /* ours: writers hold the writer lock */
    size_t total = 0;
    *sent = 0;
    for (int i = 0; i < count; i++) {
        total += pieces[i].len;
    }
    const uint64_t room = room_at(r, tail, total);
    if (room == 0 || (total <= CMP_RING_ATOMIC && room < total)) {
        return CMP_BUSY;
    }
    uint64_t pos = tail;
    size_t left = total < room ? total : (size_t)room;
    const uint64_t mask = r->cap - 1;
    for (int i = 0; i < count && left > 0; i++) {
        const unsigned char *src = (const unsigned char *)pieces[i].base;
        size_t n = pieces[i].len < left ? pieces[i].len : left;
        left -= n;
        while (n > 0) {
            size_t at = (size_t)(pos & mask);
            size_t run = (size_t)r->cap - at;
            if (run > n) {
                run = n;
            }
            memcpy(r->data + at, src, run);
            src += run;
            pos += run;
            n -= run;
        }
    }
    cmp_atomic_store64(&h->tail, pos);
    *sent = (size_t)(pos - tail);
    wake_readers(r);
    return 0;
}

int
cmp_ring_readv(cmp_ring *r, const cmp_iobuf *slots, int count, size_t *got)
{
    cmp_ring_hdr *h = r->h;
    const uint64_t head = h->head; /* ours: readers hold the reader lock */
    size_t want = 0;
    for (int i = 0; i < count; i++) {
        want += slots[i].len;
    }
    const uint64_t avail = avail_at(r, head, want);
    *got = 0;
    if (avail == 0) {
        return CMP_BUSY;
    }
    uint64_t pos = head;
    size_t left = (size_t)avail;
    const uint64_t mask = r->cap - 1;
    for (int i = 0; i < count && left > 0; i++) {
        unsigned char *dst = (unsigned char *)slots[i].base;
        size_t n = slots[i].len < left ? slots[i].len : left;
        left -= n;
        while (n > 0) {
            size_t at = (size_t)(pos & mask);
            size_t run = (size_t)r->cap - at;
            if (run > n) {
                run = n;
            }
            memcpy(dst, r->data + at, run);
            dst += run;
            pos += run;
            n -= run;
        }
    }
    cmp_atomic_store64(&h->head, pos);
    *got = (size_t)(pos - head);
    wake_writers(r);
    return 0;
}

/* Is the wait over: room for a writer (for_write), or for a reader more
   than `have` bytes, or the ring left? */
static int
ring_ready(const cmp_ring *r, int for_write, uint64_t have)
{
    if (for_write) {
        return room_for_writer(r);
    }
    return cmp_ring_used(r) > have || !cmp_ring_on(r);
}

/* The one sleep of either side (the protocol at the top of this file). */
static int
ring_sleep(cmp_ring *r, int for_write, uint64_t have, double seconds,
           int *ready)
{
    cmp_ring_hdr *h = r->h;
    uint32_t *seq = for_write ? &h->room_seq : &h->data_seq;
    int err = 0;
    *ready = ring_ready(r, for_write, have);
    if (*ready || seconds == 0.0) {
        return 0;
    }
    uint32_t v = cmp_atomic_or32(seq, 1u) | 1u; /* announce, then look */
    if (!ring_ready(r, for_write, have)) {
        err = cmp_addr_wait(seq, v, seconds);
        if (err == CMP_BUSY) {
            err = 0;
        }
    }
    *ready = ring_ready(r, for_write, have);
    return err;
}

int
cmp_ring_wait(cmp_ring *r, int for_write, double seconds, int *ready)
{
    return ring_sleep(r, for_write, 0, seconds, ready);
}

int
cmp_ring_wait_more(cmp_ring *r, uint64_t have, double seconds, int *ready)
{
    return ring_sleep(r, 0, have, seconds, ready);
}

void
cmp_ring_leave(cmp_ring *r)
{
    cmp_ring_hdr *h = r->h;
    cmp_atomic_store32(&h->mode, CMP_RING_PIPE);
    cmp_atomic_add32(&h->data_seq, 2);
    cmp_addr_wake(&h->data_seq);
    cmp_atomic_add32(&h->room_seq, 2);
    cmp_addr_wake(&h->room_seq);
}

/* Copy n bytes from position pos out (the ring's end cut where it may). */
static void
copy_out(const cmp_ring *r, uint64_t pos, void *buf, size_t n)
{
    size_t at = (size_t)(pos & (r->cap - 1));
    size_t run = (size_t)r->cap - at < n ? (size_t)r->cap - at : n;
    memcpy(buf, r->data + at, run);
    memcpy((unsigned char *)buf + run, r->data, n - run);
}

size_t
cmp_ring_peek(cmp_ring *r, void *buf, size_t len)
{
    const uint64_t head = r->h->head;
    uint64_t avail = avail_at(r, head, len);
    size_t n = avail < len ? (size_t)avail : len;
    copy_out(r, head, buf, n);
    return n;
}

void
cmp_ring_consume(cmp_ring *r, size_t n)
{
    cmp_atomic_store64(&r->h->head, r->h->head + n);
    wake_writers(r);
}

int
cmp_ring_take(cmp_ring *r, size_t skip, void *buf, size_t n)
{
    const uint64_t head = r->h->head; /* ours: readers hold the lock */
    if (avail_at(r, head, skip + n) < skip + n) {
        return 0;
    }
    copy_out(r, head + skip, buf, n);
    cmp_atomic_store64(&r->h->head, head + skip + n);
    wake_writers(r);
    return 1;
}

int
cmp_ring_frame_whole(cmp_ring *r)
{
    unsigned char hdr[CMP_FRAME_HEADER_MAX];
    uint64_t used = cmp_ring_used(r), size = 0;
    size_t n = cmp_ring_peek(r, hdr, sizeof(hdr));
    if (n < 4) {
        return 0;
    }
    int rc = cmp_frame_decode(hdr, n < 12 ? 4 : 12, &size);
    if (rc == CMP_FRAME_MORE) {
        return n < 12 ? 0 : 1;
    }
    uint64_t hlen = (rc == 0 && hdr[0] == 0xff) ? 12 : 4;
    if (rc != 0 || size + hlen > r->cap) {
        return 1; /* (a bad header is the reader's to report) */
    }
    return used >= size + hlen;
}
