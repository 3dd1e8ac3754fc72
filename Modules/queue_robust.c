/*
 * queue_robust.c -- a queue whose writer or reader dies in the middle of a
 * message.
 *
 * The queue's two locks are robust (robust.h) and quiet: a process that
 * dies holding one is taken over by the next that waits for it.  What the
 * dead process may have left in the pipe is told by the `state` word of
 * each lock's owner record:
 *
 *   writer lock:  0 at a message boundary; WRITING (with the writer's pid
 *                 above) while a write that may be cut off is under way;
 *                 TORN (with that pid) when a writer took the lock over
 *                 from one that left WRITING and waits for a reader to
 *                 settle the stream before it writes.
 *   reader lock:  the bytes of the message being read that are still in
 *                 the pipe (0 at a boundary); frame.c takes each read off.
 *
 * Only a reader can tell where a cut message ends: it has read the part
 * that was written.  A reader that waits a slice (CMP_WAIT_SLICE) for
 * bytes that do not come looks at the writer lock: TORN, or WRITING with
 * a holder that is gone (it then takes the lock over itself), means no
 * more of that message will come.  In the middle of a message, the reader
 * drops what it read and raises TornMessageError naming the dead writer;
 * at a boundary, nothing of the message reached the pipe.  Either way the
 * stream is at a boundary again and the writers go on.
 *
 * A reader that dies half-way through a message leaves its `left` count:
 * the next reader reads that many bytes and drops them (the message was
 * the dead reader's), and goes on at the boundary.
 *
 * Through the ring, a reader's record holds where the message ends in the
 * ring rather than a count (frame.h's CMP_WIRE_LEFT_AT), written before
 * the header is taken, so a reader killed at any instant leaves it right;
 * and a lock's record is the lock (robust.h), so a holder killed at any
 * instant is named.  Both are tested by killing producers and consumers
 * at random (tests/test_queue_faults.py).  What it cannot see: through the
 * pipe, a reader that dies between a read and the update of its count (a
 * few instructions) leaves a count that is off by that read's bytes.
 *
 * A get(timeout) in the middle of a message from a writer that lives but
 * does not go on (stopped, starved): through the ring (ring.h) the reader
 * waits, within its timeout, until the whole message is there before it
 * takes a byte (queue.c's whole_frame_in_time), so it gives up in time
 * and the message stays whole for the next get().  Not done: a message
 * longer than the ring, and the pipe (macOS, Windows, a queue whose
 * _reader was handed out), where the reader still waits past its timeout
 * for the rest, as the stdlib's does.  To give up there without losing
 * the message, the reader would park what it read in a named shared
 * segment, note it (name and length) in the reader lock's record beside
 * `left`, and release the lock; the next reader would take the parked
 * part and read the rest.
 */
#include "queue.h"

#define STATE_KIND(s) ((s) & 3u)
#define STATE_PID(s) ((long)((s) >> 32))
enum { WRITING = 1, TORN = 2 };

static uint64_t
state_of_me(unsigned kind)
{
    return (cmp_proc_self_tag() & ~(uint64_t)0xffffffffu) | kind;
}

/* ---- writers ------------------------------------------------------------ */

/* One slice of the wait for a reader to settle the stream. */
static int
settled_step(void *ctx, double slice, int *err)
{
    (void)err;
    cmp_owner_rec *wrec = (cmp_owner_rec *)ctx;
    if (cmp_atomic_load64(&wrec->state) == 0) {
        return 1;
    }
    cmp_sleep(slice < 0.01 ? slice : 0.01);
    return cmp_atomic_load64(&wrec->state) == 0;
}

int
qrobust_write_settle(cmp_owner_rec *wrec)
{
    if (wrec == NULL) {
        return 0;
    }
    uint64_t s = cmp_atomic_load64(&wrec->state);
    if (s == 0) {
        return 0;
    }
    /* The holder before us left in the middle of a write.  Keep its pid
       for the reader's error, and wait for the reader. */
    (void)cmp_atomic_swap64(&wrec->state, s, (s & ~(uint64_t)3u) | TORN);
    cmp_deadline forever = cmp_deadline_in(0, 0.0);
    return cmp_wait_sliced(&forever, settled_step, wrec) < 0 ? -1 : 0;
}

void
qrobust_write_mark(cmp_owner_rec *wrec)
{
    if (wrec != NULL) {
        cmp_atomic_store64(&wrec->state, state_of_me(WRITING));
    }
}

void
qrobust_write_end(cmp_owner_rec *wrec)
{
    if (wrec != NULL) {
        cmp_atomic_store64(&wrec->state, 0);
    }
}

/* ---- readers ------------------------------------------------------------ */

/* Take the writer lock over from its holder, or from nobody, when the
   holder is gone or there is none: 1 taken, 0 not (a live holder). */
static int
take_writer_lock(QueueObject *q)
{
    cmp_owner_rec *wrec = q->wrec;
    uint64_t me = cmp_proc_self_tag();
    int claimed = 0;
    uint64_t dead;
    if (cmp_owner_try(wrec, me)) {
        return 1;
    }
    return cmp_owner_claim_if_gone(wrec, me, &claimed, &dead) == 0 && claimed;
}

static void
give_writer_lock(QueueObject *q)
{
    (void)cmp_owner_give(q->wrec, q->wsem);
}

int
qrobust_stalled(void *ctx, int mid_message)
{
    QueueObject *q = (QueueObject *)ctx;
    cmp_owner_rec *wrec = q->wrec;
    uint64_t s = cmp_atomic_load64(&wrec->state);
    int taken = 0;
    if (STATE_KIND(s) == WRITING) {
        /* a writer that is gone left it, or one whose write failed */
        taken = take_writer_lock(q);
        if (!taken) {
            return 0;
        }
        s = cmp_atomic_load64(&wrec->state);
    }
    else if (STATE_KIND(s) != TORN) {
        return 0;
    }
    /* No more of the message under way will come: the stream is at a
       boundary once what was read of it is dropped. */
    cmp_atomic_store64(&wrec->state, 0);
    if (taken) {
        give_writer_lock(q);
    }
    if (!mid_message) {
        return 0;
    }
    if (q->rrec != NULL) {
        cmp_atomic_store64(&q->rrec->state, 0);
    }
    PyErr_Format(q->st->TornMessageError,
                 "a message from process %ld was cut off: its writer ended "
                 "while sending it; the queue goes on with the next one",
                 STATE_PID(s));
    return -1;
}

int
qrobust_read_resume(QueueObject *q, cmp_wire *w)
{
    if (q->rrec == NULL) {
        return 0;
    }
    uint64_t left = cmp_wire_left_bytes(cmp_atomic_load64(&q->rrec->state),
                                        w->ring);
    unsigned char scratch[16384];
    while (left > 0) {
        cmp_iobuf slot = {scratch, left < sizeof(scratch) ? (size_t)left
                                                          : sizeof(scratch)};
        if (cmp_wire_read(w, &slot, 1, CMP_WIRE_STARTED) < 0) {
            return -1;
        }
        left = cmp_wire_left_bytes(cmp_atomic_load64(&q->rrec->state),
                                   w->ring);
    }
    cmp_atomic_store64(&q->rrec->state, 0);
    return 0;
}

void
qrobust_left_as_count(QueueObject *q)
{
    if (q->rrec == NULL) {
        return;
    }
    uint64_t s = cmp_atomic_load64(&q->rrec->state);
    if (s & CMP_WIRE_LEFT_AT) {
        cmp_atomic_store64(&q->rrec->state,
                           cmp_wire_left_bytes(s, qring_get(&q->shm)));
    }
}

int
qrobust_writer_stuck(QueueObject *q)
{
    if (q->wrec == NULL) {
        return 0;
    }
    uint64_t s = cmp_atomic_load64(&q->wrec->state);
    if (STATE_KIND(s) == TORN) {
        return 1;
    }
    if (STATE_KIND(s) != WRITING) {
        return 0;
    }
    uint64_t holder = cmp_owner_load(q->wrec);
    int gone = 0;
    return holder != 0 && cmp_proc_tag_gone(holder, &gone) == 0 && gone;
}
