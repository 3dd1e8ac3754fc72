/*
 * frame.c -- the one wire layer (see frame.h): frame header encode and
 * decode, read-exactly, write-all, and the waits for a message.
 *
 * Every operation first tries once with the GIL held and without blocking
 * (MSG_DONTWAIT on sockets, FIONREAD on a connection's pipe, RWF_NOWAIT
 * or its fallback on a queue's shared pipe); only when that cannot finish
 * does it release the GIL.  The wait for the start of a message spins
 * briefly first (spin.h), then is sliced (CMP_WAIT_SLICE) so that signal
 * handlers run; long payloads on sockets are read as they stream in.
 */
#include "frame.h"
#include "robust.h"

#include <string.h>

/* Payloads longer than this are read as they stream in (sockets). */
#define WIRE_STREAM_MIN ((size_t)256 * 1024)

/* ---- the header --------------------------------------------------------- */

size_t
cmp_frame_header(unsigned char *h, uint64_t n)
{
    if (n > 0x7fffffffu) {
        memset(h, 0xff, 4);
        for (int i = 0; i < 8; i++) {
            h[4 + i] = (unsigned char)(n >> (56 - 8 * i));
        }
        return 12;
    }
    h[0] = (unsigned char)(n >> 24);
    h[1] = (unsigned char)(n >> 16);
    h[2] = (unsigned char)(n >> 8);
    h[3] = (unsigned char)n;
    return 4;
}

int
cmp_frame_decode(const unsigned char *h, size_t have, uint64_t *size)
{
    uint32_t u = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                 ((uint32_t)h[2] << 8) | (uint32_t)h[3];
    if (u == 0xffffffffu) {
        if (have < 12) {
            return CMP_FRAME_MORE;
        }
        uint64_t v = 0;
        for (int i = 4; i < 12; i++) {
            v = (v << 8) | h[i];
        }
        *size = v;
        return 0;
    }
    if (u & 0x80000000u) {
        /* negative and not the -1 marker: no peer of ours sends that */
        *size = u;
        return CMP_FRAME_BAD;
    }
    *size = u;
    return 0;
}

/* ---- pieces ------------------------------------------------------------- */

void
cmp_iobuf_advance(cmp_iobuf *pieces, int count, int *first, size_t sent)
{
    int i = *first;
    while (i < count && sent >= pieces[i].len) {
        sent -= pieces[i].len;
        i++;
    }
    if (i < count && sent > 0) {
        pieces[i].base = (const char *)pieces[i].base + sent;
        pieces[i].len -= sent;
    }
    while (i < count && pieces[i].len == 0) {
        i++;
    }
    *first = i;
}

/* The end of a try that released the GIL (or could not block): `again`
   says the try is one to make again -- an interruption, or nothing to do
   yet -- and then signal handlers run first.  -1 with an exception set (a
   handler's, or `err` raised as an OSError), else 0 to go on. */
static int
wire_settle(int err, int again)
{
    if (again) {
        return PyErr_CheckSignals() < 0 ? -1 : 0;
    }
    if (err != 0) {
        cmp_raise_oserror(err);
        return -1;
    }
    return 0;
}

/* ---- a queue's shared end: its ring, or its pipe ----------------------- */

/* (*from_ring: whether the bytes came from the ring) */
static int
shared_readv(const cmp_wire *w, const cmp_iobuf *slots, int count, size_t *got,
             int *from_ring)
{
    *from_ring = 0;
    if (w->ring != NULL) {
        int err = cmp_ring_readv(w->ring, slots, count, got);
        if (err != CMP_BUSY || cmp_ring_on(w->ring)) {
            *from_ring = 1;
            return err;
        }
        /* the ring is empty and left: the pipe follows */
    }
    return cmp_io_shared_readv(w->fd, slots, count, got);
}

int
cmp_wire_shared_writev(const cmp_wire *w, const cmp_iobuf *pieces, int count,
                       int nowait, size_t *sent)
{
    if (w->ring == NULL || !cmp_ring_writes_here(w->ring)) {
        return cmp_io_shared_writev(w->fd, pieces, count, nowait, sent);
    }
    int err = cmp_ring_writev(w->ring, pieces, count, sent);
    while (err == CMP_BUSY && !nowait) {
        int ready = 0;
        err = cmp_ring_wait(w->ring, 1, CMP_WAIT_SLICE, &ready);
        if (err == 0) {
            if (!cmp_ring_writes_here(w->ring)) {
                return cmp_io_shared_writev(w->fd, pieces, count, 0, sent);
            }
            err = cmp_ring_writev(w->ring, pieces, count, sent);
        }
    }
    return err;
}

static int
shared_wait(const cmp_wire *w, int for_write, double seconds, int *ready)
{
    if (w->ring != NULL) {
        int here = for_write
                       ? cmp_ring_writes_here(w->ring)
                       : cmp_ring_on(w->ring) || cmp_ring_used(w->ring) > 0;
        if (here) {
            /* (ready when the ring leaves meanwhile: the caller looks
               again, at the pipe) */
            return cmp_ring_wait(w->ring, for_write, seconds, ready);
        }
    }
    return cmp_io_shared_wait(w->fd, for_write, seconds, ready);
}

/* ---- reading ------------------------------------------------------------ */

/* Is the handle readable within `timeout` seconds?  GIL not needed. */
static int
wire_wait_readable(const cmp_wire *w, double timeout, int *ready)
{
    if (w->kind == CMP_WIRE_SHARED) {
        return shared_wait(w, 0, timeout, ready);
    }
    return cmp_io_wait_readable(w->fd, timeout, ready);
}

/* A spinning wait's check: is the handle readable now? */
static int
wire_check_readable(void *arg, int *ready)
{
    return wire_wait_readable((const cmp_wire *)arg, 0.0, ready);
}

/* One read that cannot block, into the slots: 0 with *got (0: end of
   file), CMP_BUSY, or an error code. */
static int
wire_read_nowait(const cmp_wire *w, cmp_iobuf *slots, int count, size_t *got,
                 int *from_ring)
{
    *from_ring = 0;
    *got = 0;
    if (w->kind == CMP_WIRE_SHARED) {
        return shared_readv(w, slots, count, got, from_ring);
    }
    void *buf = (void *)slots[0].base;
    size_t len = slots[0].len;
    if (w->kind == CMP_IO_KIND_SOCKET) {
        return cmp_io_read(w->fd, w->kind, buf, len, 1, got);
    }
    size_t avail = 0;
    int err = cmp_io_pending(w->fd, &avail);
    if (err == 0 && avail > 0) {
        return cmp_io_read(w->fd, w->kind, buf, len < avail ? len : avail, 0,
                           got);
    }
    if (err == 0 || err != CMP_BADHANDLE) {
        return CMP_BUSY; /* nothing yet, or not a pipe: wait */
    }
    return err;
}

/* Reads that may block, GIL released, until the slots are full, an end of
   file (*eof) or an error.  A long payload on a socket (`stream`) is taken
   as it comes, checking for more for a while before sleeping. */
static int
wire_read_blocking(const cmp_wire *w, cmp_iobuf *slots, int count, int *first,
                   size_t *done, int stream, int *eof)
{
    int err = 0;
    while (*first < count) {
        char *buf = (char *)slots[*first].base;
        size_t len = slots[*first].len;
        size_t got = 0;
        if (stream) {
            err = cmp_io_read(w->fd, w->kind, buf, len, 1, &got);
            if (err == CMP_BUSY) {
                int more = 0;
                err = cmp_spin_until(CMP_SPIN_MAX, wire_check_readable,
                                     (void *)w, &more);
                if (err == 0 && more) {
                    continue;
                }
                if (err == 0) {
                    err = cmp_io_read(w->fd, w->kind, buf, len, 0, &got);
                }
            }
        }
        else {
            err = cmp_io_read(w->fd, w->kind, buf, len, 0, &got);
        }
        if (err != 0) {
            break;
        }
        if (got == 0) {
            *eof = 1;
            break;
        }
        *done += got;
        cmp_iobuf_advance(slots, count, first, got);
    }
    return err;
}

uint64_t
cmp_wire_left_bytes(uint64_t left, const cmp_ring *ring)
{
    if (!(left & CMP_WIRE_LEFT_AT)) {
        return left;
    }
    uint64_t end = left & ~CMP_WIRE_LEFT_AT;
    uint64_t head = ring != NULL ? cmp_atomic_load64(&ring->h->head) : end;
    return end > head ? end - head : 0;
}

/* `got` bytes of the message were read (from the ring or the pipe): take
   them off its shared count (queue_robust.c), where there is one.  A ring
   position needs nothing while the bytes come from the ring; when they
   come from the pipe it becomes the count of what is left. */
static void
wire_took(cmp_wire *w, size_t got, int from_ring)
{
    if (w->left == NULL) {
        return;
    }
    uint64_t left = cmp_atomic_load64(w->left);
    if (left & CMP_WIRE_LEFT_AT) {
        if (from_ring) {
            return;
        }
        left = cmp_wire_left_bytes(left, w->ring);
    }
    cmp_atomic_store64(w->left, left > got ? left - got : 0);
}

/* The stdlib's exceptions for an end of file. */
static int
wire_eof(int started)
{
    if (started) {
        PyErr_SetString(PyExc_OSError, "got end of file during message");
    }
    else {
        PyErr_SetNone(PyExc_EOFError);
    }
    return -1;
}

int
cmp_wire_read(cmp_wire *w, cmp_iobuf *slots, int count, int flags)
{
    const int start = (flags & CMP_WIRE_START) != 0;
    const int shared = w->kind == CMP_WIRE_SHARED;
    size_t done = 0, want = 0;
    int first = 0, err;
    for (int i = 0; i < count; i++) {
        want += slots[i].len;
    }
    cmp_iobuf_advance(slots, count, &first, 0);
    if (first == count) {
        return 0;
    }

    /* One try with the GIL held, that cannot block -- skipped for the
       start of a message when the last one had to be waited for (a
       request/reply exchange): the sliced wait below costs no more than
       a try that finds nothing. */
    if (!(start && w->waited != NULL && *w->waited)) {
        size_t got = 0;
        int from_ring;
        err = wire_read_nowait(w, slots + first, count - first, &got,
                               &from_ring);
        if (err == 0) {
            if (got == 0) {
                return wire_eof((flags & CMP_WIRE_STARTED) != 0);
            }
            done = got;
            cmp_iobuf_advance(slots, count, &first, got);
            wire_took(w, got, from_ring);
        }
        else if (err != CMP_BUSY && wire_settle(err, err == CMP_INTR) < 0) {
            return -1;
        }
    }
    if (start && w->waited != NULL) {
        *w->waited = first < count;
    }
    double spin = (start && done == 0 && w->spin != NULL)
                      ? cmp_spin_budget(w->spin)
                      : 0.0;
    const int stream = !start && w->kind == CMP_IO_KIND_SOCKET &&
                       want - done > WIRE_STREAM_MIN && cmp_spin_possible();
    while (first < count) {
        int ready = 1, eof = 0, caught = 0;
        const double budget = spin;
        Py_BEGIN_ALLOW_THREADS
        err = 0;
        if (shared || (start && done == 0)) {
            /* (a shared pipe is read only when it says it holds bytes) */
            ready = 0;
            if (budget > 0.0) {
                err = cmp_spin_until(budget, wire_check_readable, (void *)w,
                                     &ready);
                caught = ready;
            }
            if (err == 0 && !ready) {
                err = wire_wait_readable(w, CMP_WAIT_SLICE, &ready);
            }
        }
        if (err == 0 && ready) {
            if (shared) {
                size_t got = 0;
                int from_ring;
                err = shared_readv(w, slots + first, count - first, &got,
                                   &from_ring);
                if (err == 0 && got == 0) {
                    eof = 1;
                }
                else if (err == 0) {
                    done += got;
                    cmp_iobuf_advance(slots, count, &first, got);
                    wire_took(w, got, from_ring);
                }
            }
            else {
                err = wire_read_blocking(w, slots, count, &first, &done,
                                         stream, &eof);
            }
        }
        Py_END_ALLOW_THREADS
        if (budget > 0.0) {
            cmp_spin_result(w->spin, budget, caught);
            spin = 0.0;
        }
        if (eof) {
            return wire_eof((flags & CMP_WIRE_STARTED) != 0 || done > 0);
        }
        /* (nothing to read is a reason to wait on only for a shared
           pipe, which another reader may have emptied; from a blocking
           read it is a timeout the handle was given -- SO_RCVTIMEO, as
           the fork server sets -- and is raised) */
        if (wire_settle(err, err == CMP_INTR || (err == CMP_BUSY && shared) ||
                                 (err == 0 && !ready)) < 0) {
            return -1;
        }
        if (err == 0 && !ready && w->stalled != NULL &&
            w->stalled(w->stalled_ctx,
                       (flags & CMP_WIRE_STARTED) != 0 || done > 0) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A queue reader's header, taken from the ring only once it is whole
   there, its message's end marked in `left` first (CMP_WIRE_LEFT_AT): 1
   with *r the decoding's result, 0 when it is not there whole. */
static int
ring_header_marked(cmp_wire *w, uint64_t *size, int *r)
{
    unsigned char h[CMP_FRAME_HEADER_MAX];
    size_t n = cmp_ring_peek(w->ring, h, sizeof(h));
    if (n < 4) {
        return 0;
    }
    size_t hlen = 4;
    *r = cmp_frame_decode(h, 4, size);
    if (*r == CMP_FRAME_MORE) {
        if (n < 12) {
            return 0;
        }
        hlen = 12;
        *r = cmp_frame_decode(h, 12, size);
    }
    if (*r == 0 && *size < CMP_WIRE_LEFT_AT / 2) {
        uint64_t head = cmp_atomic_load64(&w->ring->h->head);
        cmp_atomic_store64(w->left, CMP_WIRE_LEFT_AT | (head + hlen + *size));
    }
    cmp_ring_consume(w->ring, hlen);
    return 1;
}

/* A spinning wait's check: more than `have` bytes in the ring, or the
   ring left (the ring's own wait, for no time)? */
typedef struct {
    cmp_ring *ring;
    uint64_t have;
} ring_more;

static int
ring_more_check(void *arg, int *ready)
{
    const ring_more *m = (const ring_more *)arg;
    return cmp_ring_wait_more(m->ring, m->have, 0.0, ready);
}

/* Wait, as a message's start is waited for (spinning first, then in
   slices that run the signal handlers and the stalled check), until the
   ring holds a whole header: 1 (it does: take it with ring_header_marked)
   or 0 (read it as from a pipe: the ring left, or the start of a header
   sits there and no more of it comes), or -1 with an exception set. */
static int
ring_header_wait(cmp_wire *w)
{
    cmp_ring *ring = w->ring;
    unsigned char h[CMP_FRAME_HEADER_MAX];
    int waited = 0;
    for (;;) {
        if (!cmp_ring_on(ring)) {
            return 0;
        }
        size_t n = cmp_ring_peek(ring, h, sizeof(h));
        if (n >= 12 || (n >= 4 && h[0] != 0xff)) {
            if (w->waited != NULL) {
                *w->waited = (char)waited;
            }
            return 1;
        }
        waited = 1;
        ring_more m = {ring, n};
        double budget = w->spin != NULL ? cmp_spin_budget(w->spin) : 0.0;
        int ready = 0, err = 0;
        Py_BEGIN_ALLOW_THREADS
        if (budget > 0.0) {
            err = cmp_spin_until(budget, ring_more_check, &m, &ready);
        }
        if (err == 0 && !ready) {
            err = cmp_ring_wait_more(ring, n, CMP_WAIT_SLICE, &ready);
        }
        Py_END_ALLOW_THREADS
        if (budget > 0.0) {
            cmp_spin_result(w->spin, budget, ready);
        }
        if (err != 0 && err != CMP_INTR) {
            cmp_raise_oserror(err);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        if (err == 0 && !ready) {
            if (n > 0) {
                return 0; /* a header's start and no more: as a pipe's */
            }
            if (w->stalled != NULL && w->stalled(w->stalled_ctx, 0) < 0) {
                return -1;
            }
        }
    }
}

int
cmp_wire_read_header(cmp_wire *w, int ext_flags, uint64_t *size)
{
    if (w->ring != NULL && w->left != NULL) {
        int r = 0, whole = ring_header_wait(w);
        if (whole < 0) {
            return -1;
        }
        if (whole && ring_header_marked(w, size, &r)) {
            return r;
        }
    }
    unsigned char h[CMP_FRAME_HEADER_MAX];
    cmp_iobuf slot = {h, 4};
    if (cmp_wire_read(w, &slot, 1, CMP_WIRE_START) < 0) {
        return -1;
    }
    int r = cmp_frame_decode(h, 4, size);
    if (r == CMP_FRAME_MORE) {
        slot.base = h + 4;
        slot.len = 8;
        if (w->left != NULL) {
            cmp_atomic_store64(w->left, 8);
        }
        if (cmp_wire_read(w, &slot, 1, ext_flags) < 0) {
            return -1;
        }
        r = cmp_frame_decode(h, 12, size);
    }
    if (w->left != NULL && r == 0) {
        /* (queue_robust.c: what a reader taking over would drop) */
        cmp_atomic_store64(w->left, *size);
    }
    return r;
}

/* See frame.h.  One peek at the 4-byte header and one move of the head
   for the whole frame, where the two calls above peek twice and move the
   head twice (header, then body).  Nothing to mark in w->left: the frame
   goes out of the ring in one store, so no reader can die inside it. */
int
cmp_wire_take_whole(cmp_wire *w, void *buf, size_t cap, size_t *len)
{
    cmp_ring *ring = w->ring;
    unsigned char h[4];
    uint64_t size;
    if (ring == NULL || !cmp_ring_on(ring) || cmp_ring_peek(ring, h, 4) < 4 ||
        h[0] == 0xff || cmp_frame_decode(h, 4, &size) != 0 || size > cap ||
        !cmp_ring_take(ring, 4, buf, (size_t)size)) {
        return 0;
    }
    if (w->waited != NULL) {
        *w->waited = 0;
    }
    *len = (size_t)size;
    return 1;
}

/* ---- writing ------------------------------------------------------------ */

/* Writes that may block until every piece is written, an error, or (with
   !retry_intr) an interruption.  GIL released.  *sent counts the bytes. */
static int
wire_write_blocking(const cmp_wire *w, cmp_iobuf *pieces, int count,
                    int *first, int retry_intr, size_t *sent)
{
    int err = 0;
    while (*first < count) {
        size_t n = 0;
        if (w->kind == CMP_WIRE_SHARED) {
            err = cmp_wire_shared_writev(w, pieces + *first, count - *first, 0,
                                         &n);
        }
        else {
            err = cmp_io_writev(w->fd, w->kind, pieces + *first,
                                count - *first, 0, &n);
        }
        if (err == CMP_INTR && retry_intr) {
            continue;
        }
        if (err != 0) {
            break;
        }
        *sent += n;
        cmp_iobuf_advance(pieces, count, first, n);
    }
    return err;
}

/* A shared pipe is written only by calls that cannot block: what does not
   go in now waits for room, in slices, with the GIL released. */
static int
wire_write_shared(cmp_wire *w, cmp_iobuf *pieces, int count, int first)
{
    while (first < count) {
        size_t n = 0;
        int err = cmp_wire_shared_writev(w, pieces + first, count - first, 1,
                                         &n);
        if (err == 0) {
            cmp_iobuf_advance(pieces, count, &first, n);
            continue;
        }
        if (err == CMP_BUSY) {
            int ready = 0;
            Py_BEGIN_ALLOW_THREADS
            err = shared_wait(w, 1, CMP_WAIT_SLICE, &ready);
            Py_END_ALLOW_THREADS
            if (err == 0 && ready) {
                continue;
            }
        }
        if (wire_settle(err, err == 0 || err == CMP_INTR) < 0) {
            return -1;
        }
    }
    return 0;
}

int
cmp_wire_write_all(cmp_wire *w, cmp_iobuf *pieces, int count)
{
    int first = 0, err;
    size_t sent = 0;
    cmp_iobuf_advance(pieces, count, &first, 0);
    if (w->kind == CMP_WIRE_SHARED) {
        return wire_write_shared(w, pieces, count, first);
    }
    if (first < count && w->kind == CMP_IO_KIND_SOCKET) {
        err = cmp_io_writev(w->fd, w->kind, pieces + first, count - first, 1,
                            &sent);
        if (err == 0) {
            cmp_iobuf_advance(pieces, count, &first, sent);
        }
        else if (err != CMP_BUSY && wire_settle(err, err == CMP_INTR) < 0) {
            return -1;
        }
    }
    while (first < count) {
        Py_BEGIN_ALLOW_THREADS
        err = wire_write_blocking(w, pieces, count, &first, 0, &sent);
        Py_END_ALLOW_THREADS
        if (wire_settle(err, err == CMP_INTR) < 0) {
            return -1;
        }
    }
    return 0;
}

int
cmp_wire_write_all_nogil(cmp_wire *w, cmp_iobuf *pieces, int count,
                         size_t *sent)
{
    int first = 0;
    *sent = 0;
    cmp_iobuf_advance(pieces, count, &first, 0);
    return wire_write_blocking(w, pieces, count, &first, 1, sent);
}

/* ---- waiting ------------------------------------------------------------ */

/* One slice of cmp_wire_poll (wait.h's step). */
static int
wire_poll_step(void *ctx, double slice, int *err)
{
    int ready = 0;
    *err = wire_wait_readable((const cmp_wire *)ctx, slice, &ready);
    if (*err == CMP_INTR) {
        *err = 0;
        return 0;
    }
    return *err != 0 ? -1 : ready;
}

int
cmp_wire_poll(cmp_wire *w, const cmp_deadline *deadline)
{
    int ready = 0;
    int err = wire_wait_readable(w, 0.0, &ready);
    if (err == 0 && ready) {
        return 1;
    }
    if (wire_settle(err, err == CMP_INTR) < 0) {
        return -1;
    }
    if (w->stalled == NULL) {
        return cmp_wait_sliced(deadline, wire_poll_step, w);
    }
    /* slice by slice, telling the owner of each that passes empty */
    for (;;) {
        double left = cmp_deadline_left(deadline);
        cmp_deadline slice = cmp_deadline_in(
            1, left < 0.0 || left > CMP_WAIT_SLICE ? CMP_WAIT_SLICE : left);
        int r = cmp_wait_sliced(&slice, wire_poll_step, w);
        if (r != 0 || cmp_deadline_passed(deadline)) {
            return r;
        }
        if (w->stalled(w->stalled_ctx, 0) < 0) {
            return -1;
        }
    }
}
