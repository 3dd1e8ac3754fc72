/*
 * queue.c -- QueueBase, the native base of queues.Queue, JoinableQueue
 * and SimpleQueue (queue.h says what the other queue files hold).
 *
 * put() encodes the object in the calling thread (queue_codec.c) and, when
 * nothing of this process is still waiting to be sent, writes the frame
 * straight into the pipe without blocking (under the writer lock, taken
 * without waiting).  Only what the pipe does not take goes to the feeder
 * (queue_feeder.c).  get() reads one frame under the reader lock, waiting
 * with the GIL released (frame.c).
 *
 * Locks and the size semaphore are the synchronize objects of the queue;
 * their bound acquire/release methods (the C SemLock's) are called here.
 */
#include "queue.h"
#include "semlock.h"
#include "pickler.h"

#include <string.h>

/* The kernel's per-user pipe budget that this process's queues have taken
   (QUEUE_GROW_BUDGET; cmp_process_lock() guards it). */
static size_t pipe_growth_held = 0;

static void raise_queue_exception(cmp_state *st, int full);

/* ---- the shared-memory ring ---- */

int
qring_attach(qring *r, PyObject *block)
{
    qring_release(r);
    if (block == Py_None) {
        return 0;
    }
    if (PyObject_GetBuffer(block, &r->view, PyBUF_WRITABLE) < 0) {
        return -1;
    }
    if (cmp_ring_attach(&r->ring, r->view.buf, (size_t)r->view.len) < 0) {
        PyBuffer_Release(&r->view);
        return -1;
    }
    r->attached = 1;
    return 0;
}

void
qring_release(qring *r)
{
    if (r->attached) {
        r->attached = 0;
        PyBuffer_Release(&r->view);
    }
}

/* A wire for the queue's writing end h. */
static cmp_wire
writer_wire(QueueObject *q, cmp_handle_t h)
{
    cmp_wire w = {h,    CMP_WIRE_SHARED,   NULL, NULL, NULL, NULL,
                  NULL, qring_get(&q->shm)};
    return w;
}

static PyObject *
queue_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    cmp_state *st = cmp_state_from_type(tp);
    if (st == NULL) {
        return NULL;
    }
    QueueObject *q = (QueueObject *)tp->tp_alloc(tp, 0);
    if (q == NULL) {
        return NULL;
    }
    q->st = st;
    return (PyObject *)q;
}

static int
queue_traverse(PyObject *op, visitproc visit, void *arg)
{
    QueueObject *q = (QueueObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(q->feed);
    Py_VISIT(q->reader);
    Py_VISIT(q->r.fileno);
    Py_VISIT(q->rl.acquire);
    Py_VISIT(q->rl.release);
    Py_VISIT(q->sem.acquire);
    Py_VISIT(q->sem.release);
    Py_VISIT(q->dumps);
    Py_VISIT(q->loads);
    Py_VISIT(q->kept);
    return 0;
}

static int
queue_clear(PyObject *op)
{
    QueueObject *q = (QueueObject *)op;
    Py_CLEAR(q->feed);
    Py_CLEAR(q->reader);
    q->r.native = NULL;
    Py_CLEAR(q->r.fileno);
    qlock_clear(&q->rl);
    qlock_clear(&q->sem);
    Py_CLEAR(q->dumps);
    Py_CLEAR(q->loads);
    Py_CLEAR(q->kept);
    qring_release(&q->shm);
    if (q->pipe_growth > 0) {
        cmp_process_lock();
        pipe_growth_held -= q->pipe_growth < pipe_growth_held
                                ? q->pipe_growth
                                : pipe_growth_held;
        cmp_process_unlock();
        q->pipe_growth = 0;
    }
    return 0;
}

static void
queue_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)queue_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int
queue_ready(QueueObject *q)
{
    if (q->feed == NULL || q->reader == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "queue is not set up (QueueBase._bind not called)");
        return -1;
    }
    return 0;
}

static PyObject *
closed_error(QueueObject *q)
{
    PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)q);
    return NULL;
}

/* n messages left the queue (taken, or dropped after put() counted
   them): their units back to the size semaphore, or counted out.  Keeps
   a pending exception; 0 or -1 (with keep_error, always 0). */
static int
give_room(QueueObject *q, Py_ssize_t n, int keep_error)
{
    if (q->counted) {
        cmp_ring_count_gets(&q->shm.ring, n);
        return 0;
    }
    for (Py_ssize_t i = 0; q->sem.release != NULL && i < n; i++) {
        if (keep_error) {
            qlock_give_keeping_error(&q->sem);
        }
        else if (qlock_give(&q->sem) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Hand a failure to send `obj` to the Python side (Queue._report_send_
   error: it gives back the size-semaphore unit and calls the feeder-error
   hook, as the stdlib's feeder does).  Consumes the pending exception;
   only Exception subclasses are reported, anything else propagates. */
static PyObject *
report_send_error(QueueObject *q, PyObject *obj)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        (void)give_room(q, 1, 1);
        return NULL;
    }
    PyObject *exc = cmp_exc_take();
    PyObject *r = PyObject_CallMethod((PyObject *)q, "_report_send_error",
                                      "OO", exc, obj);
    Py_DECREF(exc);
    return r;
}

/* Make sure the feeder thread runs (Queue._start_thread). */
static int
ensure_feeder(QueueObject *q)
{
    FeedObject *fd = q->feed;
    if (fd->started) {
        return 0;
    }
    if (fd->stage == NULL) {
        /* the feeder's staging buffer, made before the thread runs */
        fd->stage = PyMem_Malloc(FEED_STAGE_BYTES);
        if (fd->stage == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    fd->started = 1;
    PyObject *r = PyObject_CallMethod((PyObject *)q, "_start_thread", NULL);
    if (r == NULL) {
        fd->started = 0;
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Before the first long frame: ask once (per process) for the larger
   pipe buffer, within the budget.  Best effort; nothing is reported. */
static void
grow_pipe_for(QueueObject *q, const qframe *f)
{
    FeedObject *fd = q->feed;
    if (q->pipe_grown || qframe_total(f) < QUEUE_GROW_AT ||
        (q->shm.attached && cmp_ring_on(&q->shm.ring))) {
        return;
    }
    q->pipe_grown = 1;
    cmp_handle_t h;
    if (qconn_handle(&fd->w, &h) < 0) {
        /* a closed writer: the write that follows reports it */
        PyErr_Clear();
        return;
    }
    /* reserve the room first: the system call runs without the lock */
    cmp_process_lock();
    int room = pipe_growth_held + QUEUE_PIPE_WANT <= QUEUE_GROW_BUDGET;
    if (room) {
        pipe_growth_held += QUEUE_PIPE_WANT;
    }
    cmp_process_unlock();
    if (!room) {
        return;
    }
    size_t now = cmp_io_pipe_grow(h, QUEUE_PIPE_WANT);
    cmp_process_lock();
    pipe_growth_held -= QUEUE_PIPE_WANT;
    if (now > ((size_t)64 << 10)) {
        q->pipe_growth = now;
        pipe_growth_held += now;
    }
    cmp_process_unlock();
}

/* A full ring, holding the writer lock: its reader is usually draining
   it.  Wait for room (the GIL released; spinning first, as a reader
   does) while the reader makes progress, rather than hand the frame to
   the feeder thread, whose hand-overs of the GIL cost more than the
   copies: a producer ahead of its consumer made 1.0M small msgs/s and
   1.7 GiB/s of 64 KiB ones through the feeder.  A reader that takes no
   byte for QUEUE_PUT_WAIT (busy with what it got, or this very thread)
   sends the frame (or its rest) to the feeder as before: put() never
   waits on a reader that does not read.  The pieces from *done on go in;
   0 with *done updated, or CMP_BUSY when nothing at all went in, or the
   write's error. */
static int
ring_room_check(void *ring, int *ready)
{
    return cmp_ring_wait((cmp_ring *)ring, 1, 0.0, ready);
}

static int
wait_for_room(QueueObject *q, cmp_wire *w, cmp_iobuf *pieces, int np,
              size_t total, size_t *done)
{
    int first = 0, err = 0;
    const double wait = queue_put_wait();
    cmp_iobuf_advance(pieces, np, &first, *done);
    while (*done < total) {
        uint64_t before = cmp_ring_used(w->ring);
        int ready = 0, caught = 0;
        double budget = cmp_spin_budget(&q->wspin);
        Py_BEGIN_ALLOW_THREADS
        if (budget > 0.0) {
            (void)cmp_spin_until(budget, ring_room_check, w->ring, &ready);
            caught = ready;
        }
        if (!ready) {
            (void)cmp_ring_wait(w->ring, 1, wait, &ready);
        }
        Py_END_ALLOW_THREADS
        if (budget > 0.0) {
            cmp_spin_result(&q->wspin, budget, caught);
        }
        if (ready) {
            size_t n = 0;
            err = cmp_wire_shared_writev(w, pieces + first, np - first, 1, &n);
            if (err == 0) {
                *done += n;
                cmp_iobuf_advance(pieces, np, &first, n);
            }
            else if (err != CMP_BUSY) {
                return err;
            }
        }
        else if (cmp_ring_used(w->ring) >= before) {
            break; /* the reader took nothing meanwhile */
        }
    }
    return *done > 0 ? 0 : CMP_BUSY;
}

/* Write f now if the pipe takes it without blocking, else queue it for
   the feeder.  Consumes f. */
static PyObject *
send_frame(QueueObject *q, PyObject *obj, qframe *f)
{
    FeedObject *fd = q->feed;
    PyObject *res = NULL;
    /* The feeder starts at the first put, as the stdlib's does, although
       this put may go straight into the pipe: a thread that cannot be
       started (interpreter shutdown, gh-109047) fails put() itself, and
       concurrent.futures counts on that to break its pool. */
    if (ensure_feeder(q) < 0) {
        goto fail_release_sem;
    }
    fd->used = 1;
    grow_pipe_for(q, f);
    if (fd->count == 0) {
        int locked = 1;
        if (fd->wl.acquire != NULL) {
            locked = qlock_take(&fd->wl, 0, NULL);
            if (locked == 0 && q->shm.attached && cmp_ring_on(&q->shm.ring)) {
                /* Another producer writes into the ring: for a copy, as a
                   rule.  Wait for it a little rather than go through the
                   feeder thread, which grows its buffer and hands the GIL
                   over for each batch (2+2 producers and consumers made
                   about the same rate either way, 1.8-2.0M msgs/s). */
                locked = qlock_take_briefly(&fd->wl, queue_put_wait());
            }
            if (locked < 0) {
                goto fail_release_sem;
            }
        }
        if (locked &&
            (fd->count != 0 ||
             (fd->wrec != NULL && cmp_atomic_load64(&fd->wrec->state) != 0))) {
            /* another thread queued frames while we took the lock, or the
               stream waits to be settled (the feeder waits for that) */
            if (fd->wl.release != NULL && qlock_give(&fd->wl) < 0) {
                goto fail_release_sem;
            }
            locked = 0;
        }
        if (locked) {
            cmp_handle_t h;
            size_t done = 0;
            cmp_iobuf pieces[3];
            unsigned char scratch[29];
            int rc = 0;
            if (qconn_handle(&fd->w, &h) < 0) {
                rc = -1;
            }
            else {
                int np = qframe_pieces(f, pieces, scratch);
                if (qframe_total(f) > QUEUE_ATOMIC_WRITE) {
                    qrobust_write_mark(fd->wrec);
                }
                cmp_wire w = writer_wire(q, h);
                /* into a ring, a frame that fits in half of it goes whole
                   or waits: a part would leave the rest to the feeder */
                int whole = w.ring != NULL && cmp_ring_on(w.ring) &&
                            (uint64_t)qframe_total(f) <= w.ring->cap / 2;
                int err = whole && !cmp_ring_has_room(
                                       w.ring, (uint64_t)qframe_total(f))
                              ? CMP_BUSY
                              : cmp_wire_shared_writev(&w, pieces, np, 1,
                                                       &done);
                if ((err == CMP_BUSY ||
                     (err == 0 && done < (size_t)qframe_total(f))) &&
                    w.ring != NULL && cmp_ring_on(w.ring)) {
                    err = wait_for_room(q, &w, pieces, np,
                                        (size_t)qframe_total(f), &done);
                }
                if (err == 0 && (Py_ssize_t)done == qframe_total(f)) {
                    qrobust_write_end(fd->wrec);
                }
                else if (err == CMP_BUSY || err == CMP_INTR) {
                    /* nothing went in */
                    qrobust_write_end(fd->wrec);
                }
                if (err == CMP_BUSY || err == CMP_INTR) {
                    done = 0;
                }
                else if (err != 0) {
                    cmp_raise_oserror(err);
                    rc = -1;
                }
            }
            if (rc < 0 || done == 0 || (Py_ssize_t)done == qframe_total(f)) {
                if (fd->wl.release != NULL) {
                    if (rc < 0) {
                        qlock_give_keeping_error(&fd->wl);
                    }
                    else if (qlock_give(&fd->wl) < 0) {
                        goto fail_release_sem;
                    }
                }
                if (rc < 0) {
                    qframe_clear(f);
                    return report_send_error(q, obj);
                }
                if (done > 0) {
                    qframe_clear(f);
                    Py_RETURN_NONE;
                }
            }
            else {
                /* part of a long frame went in: the feeder finishes it
                   and releases the writer lock */
                f->done = (Py_ssize_t)done;
                f->holds_wlock = fd->wl.acquire != NULL;
            }
        }
    }
    f->obj = Py_NewRef(obj);
    if (feed_push(fd, f) < 0) {
        qframe_clear(f);
        goto fail_release_sem;
    }
    if (ensure_feeder(q) < 0) {
        return NULL;
    }
    Py_INCREF(fd); /* the queue may be rebound while the GIL is let go */
    feed_hand_over(fd);
    Py_DECREF(fd);
    res = Py_NewRef(Py_None);
    return res;

fail_release_sem:
    qframe_clear(f);
    (void)give_room(q, 1, 1);
    return NULL;
}

/* put() after the size-semaphore unit is held. */
static PyObject *
put_acquired(QueueObject *q, PyObject *obj)
{
    qframe f;
    if (qframe_encode(q->st, q->kept, q->dumps, obj, &f) < 0) {
        return report_send_error(q, obj);
    }
    return send_frame(q, obj, &f);
}

/* The checks of put() before anything is written: the queue is open and
   a unit of the size semaphore is taken (queue.Full when none came in
   time), or the message counted.  0 or -1. */
static int
reserve_room(QueueObject *q, PyObject *block_obj, PyObject *timeout)
{
    if (q->closed) {
        closed_error(q);
        return -1;
    }
    if (queue_ready(q) < 0) {
        return -1;
    }
    if (q->counted) {
        cmp_ring_count_puts(&q->shm.ring, 1);
        return 0;
    }
    if (q->sem.acquire == NULL) {
        return 0;
    }
    int block = 1;
    if (cmp_arg_bool(block_obj, 1, &block) < 0) {
        return -1;
    }
    int got = qlock_take(&q->sem, block, timeout);
    if (got == 0) {
        raise_queue_exception(q->st, 1);
    }
    return got > 0 ? 0 : -1;
}

static PyObject *
queue_put(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const names[] = {"obj", "block", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("put", names, 1);
    QueueObject *q = (QueueObject *)op;
    PyObject *a[3];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (reserve_room(q, a[1], a[2]) < 0) {
        return NULL;
    }
    return put_acquired(q, a[0]);
}

static PyObject *
queue_reserve(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("_reserve", names, 0);
    PyObject *a[2];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        reserve_room((QueueObject *)op, a[0], a[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
queue_put_acquired(PyObject *op, PyObject *obj)
{
    QueueObject *q = (QueueObject *)op;
    if (queue_ready(q) < 0) {
        return NULL;
    }
    return put_acquired(q, obj);
}

/* ---- reading ---- */

/* The wire of the queue's reading end (a closed reader raises). */
static int
reader_wire(QueueObject *q, cmp_wire *w)
{
    w->kind = CMP_WIRE_SHARED;
    w->spin = &q->spin;
    w->waited = NULL;
    w->left = q->rrec != NULL ? &q->rrec->state : NULL;
    w->stalled = q->wrec != NULL ? qrobust_stalled : NULL;
    w->stalled_ctx = q;
    w->ring = qring_get(&q->shm);
    return qconn_handle(&q->r, &w->fd);
}

/* Read one message while holding the reader lock: 0 with *obj, or with
   *payload when it still needs unpickling (done by the caller after the
   lock is released), or -1 with an exception set. */
static int
receive_locked(QueueObject *q, PyObject **obj, PyObject **payload)
{
    cmp_wire w;
    *obj = *payload = NULL;
    if (reader_wire(q, &w) < 0 || qrobust_read_resume(q, &w) < 0 ||
        qcodec_read(&w, obj, payload) < 0) {
        return -1;
    }
    if (w.left != NULL) {
        /* at a boundary (a ring position there would say so too) */
        cmp_atomic_store64(w.left, 0);
    }
    return 0;
}

static PyObject *
finish_get(QueueObject *q, PyObject *obj, PyObject *payload)
{
    if (obj != NULL) {
        return obj;
    }
    obj = PyObject_CallOneArg(q->loads, payload);
    Py_DECREF(payload);
    return obj;
}

/* A get() with a timeout that finds the start of a message in the ring
   waits, within the deadline, until the whole message is there, so that
   it never waits past its timeout in the middle of one (its writer
   stopped, or starved of CPU): the message stays in the ring, whole, for
   the next get().  A message longer than the ring streams, and its
   reader waits for the rest as before; so does a reader whose writer is
   gone, to meet the cut message (TornMessageError).  1 whole (or one of
   those), 0 timed out, -1 with an exception. */
static int
whole_frame_in_time(QueueObject *q, cmp_ring *r, const cmp_deadline *deadline)
{
    while (!cmp_ring_frame_whole(r) && cmp_ring_on(r)) {
        if (qrobust_writer_stuck(q)) {
            return 1;
        }
        if (cmp_deadline_passed(deadline)) {
            return 0;
        }
        double left = cmp_deadline_left(deadline);
        double slice = left < 0.0 || left > CMP_WAIT_SLICE ? CMP_WAIT_SLICE
                                                           : left;
        uint64_t have = cmp_ring_used(r);
        int ready = 0, err;
        Py_BEGIN_ALLOW_THREADS
        err = cmp_ring_wait_more(r, have, slice, &ready);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        if (err != 0 && err != CMP_INTR) {
            cmp_raise_oserror(err);
            return -1;
        }
    }
    return 1;
}

/* The start of get(block, timeout): the reader lock taken and, where a
   timeout applies, a message there to read.  0 (the lock held), or -1
   with an exception set (queue.Empty when nothing came in time). */
static int
get_begin(QueueObject *q, PyObject *block_obj, PyObject *timeout)
{
    if (q->closed) {
        closed_error(q);
        return -1;
    }
    if (queue_ready(q) < 0) {
        return -1;
    }
    int block = 1;
    if (cmp_arg_bool(block_obj, 1, &block) < 0) {
        return -1;
    }
    if (timeout == NULL) {
        timeout = Py_None;
    }
    if (block && timeout == Py_None) {
        return qlock_take(&q->rl, 1, NULL) < 0 ? -1 : 0;
    }
    cmp_deadline deadline = cmp_deadline_in(1, 0.0);
    if (block && cmp_deadline_parse(timeout, &deadline) < 0) {
        return -1;
    }
    int got = qlock_take(&q->rl, block, block ? timeout : NULL);
    if (got <= 0) {
        if (got == 0) {
            raise_queue_exception(q->st, 0);
        }
        return -1;
    }
    cmp_wire w;
    int ready = (reader_wire(q, &w) < 0 || qrobust_read_resume(q, &w) < 0)
                    ? -1
                    : cmp_wire_poll(&w, &deadline);
    if (ready > 0 && w.ring != NULL && cmp_ring_used(w.ring) > 0) {
        ready = whole_frame_in_time(q, w.ring, &deadline);
    }
    if (ready <= 0) {
        if (ready == 0) {
            raise_queue_exception(q->st, 0);
        }
        qlock_give_keeping_error(&q->rl);
        return -1;
    }
    return 0;
}

static PyObject *
queue_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("get", names, 0);
    QueueObject *q = (QueueObject *)op;
    PyObject *a[2];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        get_begin(q, a[0], a[1]) < 0) {
        return NULL;
    }
    PyObject *obj, *payload;
    if (receive_locked(q, &obj, &payload) < 0) {
        qlock_give_keeping_error(&q->rl);
        return NULL;
    }
    if (qlock_give(&q->rl) < 0 || give_room(q, 1, 0) < 0) {
        Py_XDECREF(obj);
        Py_XDECREF(payload);
        return NULL;
    }
    return finish_get(q, obj, payload);
}

/* Is another message there now (the reader lock held)?  1, 0 or -1. */
static int
more_now(QueueObject *q)
{
    cmp_wire w;
    if (reader_wire(q, &w) < 0) {
        return -1;
    }
    w.stalled = NULL;
    cmp_deadline now = cmp_deadline_in(1, 0.0);
    return cmp_wire_poll(&w, &now);
}

/* get_many(block=True, timeout=None, max_messages_to_get=None): faster-
   fifo's batched get.  Waits for the first message as get() does, then
   takes every further one that is there already (up to the maximum)
   under the same hold of the reader lock.  Returns a list. */
static PyObject *
queue_get_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout",
                                        "max_messages_to_get"};
    static const cmp_argspec spec = CMP_ARGSPEC("get_many", names, 0);
    QueueObject *q = (QueueObject *)op;
    PyObject *a[3];
    Py_ssize_t most;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_opt_ssize(a[2], PY_SSIZE_T_MAX, &most) < 0) {
        return NULL;
    }
    if (most < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "max_messages_to_get must be at least 1");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    PyObject *pickled = PyList_New(0); /* indexes still to unpickle */
    if (out == NULL || pickled == NULL || get_begin(q, a[0], a[1]) < 0) {
        goto fail;
    }
    int rc = 0;
    while (PyList_GET_SIZE(out) < most) {
        PyObject *obj, *payload;
        if (PyList_GET_SIZE(out) > 0) {
            rc = more_now(q);
            if (rc <= 0) {
                break;
            }
        }
        rc = receive_locked(q, &obj, &payload);
        if (rc < 0) {
            break;
        }
        if (payload != NULL) {
            PyObject *at = PyLong_FromSsize_t(PyList_GET_SIZE(out));
            rc = at == NULL ? -1 : PyList_Append(pickled, at);
            Py_XDECREF(at);
            obj = payload;
        }
        if (rc == 0) {
            rc = PyList_Append(out, obj);
        }
        Py_DECREF(obj);
        if (rc < 0) {
            break;
        }
    }
    /* messages already taken are returned even when a later read failed;
       the failure is raised when nothing was taken */
    if (rc < 0 && PyList_GET_SIZE(out) > 0) {
        PyErr_Clear();
        rc = 0;
    }
    if (rc < 0) {
        qlock_give_keeping_error(&q->rl);
        goto fail;
    }
    if (qlock_give(&q->rl) < 0) {
        goto fail;
    }
    if (give_room(q, PyList_GET_SIZE(out), 0) < 0) {
        goto fail;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(pickled); k++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(pickled, k));
        PyObject *obj = PyObject_CallOneArg(q->loads, PyList_GET_ITEM(out, i));
        if (obj == NULL) {
            goto fail;
        }
        PyList_SetItem(out, i, obj);
    }
    Py_DECREF(pickled);
    return out;

fail:
    Py_XDECREF(out);
    Py_XDECREF(pickled);
    return NULL;
}

/* put_many(iterable, block=True, timeout=None): faster-fifo's batched
   put.  Takes room for every object (queue.Full when it does not come in
   time, and then none is put), encodes them all, and sends the frames as
   one write under one hold of the writer lock. */
/* How many of the first n frames were kept (not dropped as unpicklable):
   the room put_many took for them. */
static Py_ssize_t
frames_kept(const qframe *frames, Py_ssize_t n)
{
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        kept += frames[i].ndata >= 0;
    }
    return kept;
}

static PyObject *
queue_put_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"iterable", "block", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("put_many", names, 1);
    QueueObject *q = (QueueObject *)op;
    PyObject *a[3];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        queue_ready(q) < 0) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(a[0], "put_many() expects an iterable");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *block_obj = a[1] != NULL ? a[1] : Py_True;
    PyObject *timeout = a[2] != NULL ? a[2] : Py_None;
    PyObject *res = NULL;
    qframe *frames = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(qframe));
    Py_ssize_t done = 0, encoded = 0, bytes = 0;
    if (frames == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    /* the room first, for all of them, as n puts would take it; all or
       nothing: when room for one does not come, none is put */
    for (; done < n; done++) {
        if (reserve_room(q, block_obj, timeout) < 0) {
            (void)give_room(q, frames_kept(frames, done), 1);
            goto out;
        }
        if (qframe_encode(q->st, q->kept, q->dumps,
                          PySequence_Fast_GET_ITEM(seq, done),
                          &frames[done]) < 0) {
            /* as put(): the object is reported and dropped, the rest go */
            PyObject *r = report_send_error(
                q, PySequence_Fast_GET_ITEM(seq, done));
            if (r == NULL) {
                (void)give_room(q, frames_kept(frames, done), 1);
                goto out;
            }
            Py_DECREF(r);
            frames[done].ndata = -1; /* dropped */
            continue;
        }
        bytes += qframe_total(&frames[done]);
    }
    /* one frame of all the frames: the pieces copied together */
    PyObject *all = PyBytes_FromStringAndSize(NULL, bytes);
    if (all == NULL) {
        goto out;
    }
    char *at = PyBytes_AS_STRING(all);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (frames[i].ndata < 0) {
            continue;
        }
        cmp_iobuf pieces[3];
        unsigned char scratch[29];
        int np = qframe_pieces(&frames[i], pieces, scratch);
        for (int k = 0; k < np; k++) {
            memcpy(at, pieces[k].base, pieces[k].len);
            at += pieces[k].len;
        }
        qframe_clear(&frames[i]);
        encoded++;
    }
    if (encoded == 0) {
        Py_DECREF(all);
        res = Py_NewRef(Py_None);
        goto out;
    }
    qframe batch;
    memset(&batch, 0, sizeof(batch));
    batch.data = PyBytes_AS_STRING(all);
    batch.ndata = bytes;
    batch.owner = all;
    /* the size semaphore's units are the caller's now: send_frame gives
       back one on failure, put_many the others */
    res = send_frame(q, seq, &batch);
    if (res == NULL && encoded > 1) {
        (void)give_room(q, encoded - 1, 1);
    }
out:
    if (frames != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (frames[i].ndata >= 0) {
                qframe_clear(&frames[i]);
            }
        }
        PyMem_Free(frames);
    }
    Py_DECREF(seq);
    return res;
}

/* _poll(timeout=0.0): whether a message is there to read (the ring's or
   the pipe's), waiting at most timeout seconds (None: no limit). */
static PyObject *
queue_poll(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("_poll", names, 0);
    QueueObject *q = (QueueObject *)op;
    PyObject *a[1];
    cmp_deadline deadline = cmp_deadline_in(1, 0.0);
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        queue_ready(q) < 0 ||
        (a[0] != NULL && cmp_deadline_parse(a[0], &deadline) < 0)) {
        return NULL;
    }
    cmp_wire w;
    if (reader_wire(q, &w) < 0) {
        return NULL;
    }
    w.stalled = NULL;
    int r = cmp_wire_poll(&w, &deadline);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* _ring_leave(): leave the ring for the pipe (ring.h, "Pipe mode").
   Returns the bytes still in the ring, to be moved (_ring_move). */
static PyObject *
queue_ring_leave(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    QueueObject *q = (QueueObject *)op;
    if (!q->shm.attached) {
        return PyLong_FromLong(0);
    }
    if (cmp_ring_on(&q->shm.ring)) {
        cmp_ring_leave(&q->shm.ring);
    }
    return PyLong_FromUnsignedLongLong(cmp_ring_used(&q->shm.ring));
}

/* _give_room(): see give_room(). */
static PyObject *
queue_give_room(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    QueueObject *q = (QueueObject *)op;
    if (give_room(q, 1, 0) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _count(): qsize() of a counted queue (ring.h's cmp_ring_counted). */
static PyObject *
queue_count(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    QueueObject *q = (QueueObject *)op;
    if (!q->counted) {
        Py_RETURN_NONE;
    }
    int64_t n = cmp_ring_counted(&q->shm.ring);
    return PyLong_FromLongLong(n > 0 ? (long long)n : 0);
}

#define RING_MOVE_CHUNK ((size_t)64 << 10)

/* _ring_move(): with the reader lock held, move what the pipe takes now
   of the ring's bytes into the pipe; returns the bytes left in the ring.
   When no process reads the pipe any more (EPIPE), the ring's bytes are
   dropped, as a pipe's would be. */
static PyObject *
queue_ring_move(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    QueueObject *q = (QueueObject *)op;
    if (!q->shm.attached || queue_ready(q) < 0) {
        return q->shm.attached ? NULL : PyLong_FromLong(0);
    }
    cmp_handle_t h;
    if (qconn_handle(&q->feed->w, &h) < 0) {
        return NULL;
    }
    cmp_ring *r = &q->shm.ring;
    qrobust_left_as_count(q);
    unsigned char *buf = PyMem_Malloc(RING_MOVE_CHUNK);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    int err = 0;
    for (;;) {
        size_t n = cmp_ring_peek(r, buf, RING_MOVE_CHUNK);
        if (n == 0) {
            break;
        }
        cmp_iobuf piece = {buf, n};
        size_t sent = 0;
        err = cmp_io_shared_writev(h, &piece, 1, 1, &sent);
        if (err == EPIPE) {
            cmp_ring_consume(r, (size_t)cmp_ring_used(r));
            err = 0;
            break;
        }
        if (err != 0) {
            break;
        }
        cmp_ring_consume(r, sent);
    }
    PyMem_Free(buf);
    if (err != 0 && err != CMP_BUSY && err != CMP_INTR) {
        cmp_raise_oserror(err);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(cmp_ring_used(r));
}

/* ---- SimpleQueue ---- */

/* Write the whole frame, waiting as long as it takes (the caller holds
   the writer lock).  The first attempt keeps the GIL. */
static int
write_all(QueueObject *q, cmp_handle_t h, qframe *f)
{
    cmp_iobuf pieces[3];
    unsigned char scratch[29];
    int np = qframe_pieces(f, pieces, scratch);
    cmp_wire w = writer_wire(q, h);
    return cmp_wire_write_all(&w, pieces, np);
}

static PyObject *
simple_put(PyObject *op, PyObject *obj)
{
    QueueObject *q = (QueueObject *)op;
    if (queue_ready(q) < 0) {
        return NULL;
    }
    FeedObject *fd = q->feed;
    qframe f;
    if (qframe_encode(q->st, q->kept, q->dumps, obj, &f) < 0) {
        return NULL;
    }
    grow_pipe_for(q, &f);
    if (fd->wl.acquire != NULL && qlock_take(&fd->wl, 1, NULL) < 0) {
        qframe_clear(&f);
        return NULL;
    }
    cmp_handle_t h;
    int rc = qrobust_write_settle(fd->wrec);
    if (rc == 0) {
        rc = qconn_handle(&fd->w, &h);
    }
    if (rc == 0) {
        if (qframe_total(&f) > QUEUE_ATOMIC_WRITE) {
            qrobust_write_mark(fd->wrec);
        }
        rc = write_all(q, h, &f);
        if (rc == 0) {
            qrobust_write_end(fd->wrec);
        }
    }
    qframe_clear(&f);
    if (fd->wl.release != NULL) {
        if (rc < 0) {
            qlock_give_keeping_error(&fd->wl);
        }
        else if (qlock_give(&fd->wl) < 0) {
            return NULL;
        }
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
simple_get(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    QueueObject *q = (QueueObject *)op;
    if (queue_ready(q) < 0) {
        return NULL;
    }
    if (qlock_take(&q->rl, 1, NULL) < 0) {
        return NULL;
    }
    PyObject *obj, *payload;
    if (receive_locked(q, &obj, &payload) < 0) {
        qlock_give_keeping_error(&q->rl);
        return NULL;
    }
    if (qlock_give(&q->rl) < 0) {
        Py_XDECREF(obj);
        Py_XDECREF(payload);
        return NULL;
    }
    return finish_get(q, obj, payload);
}

/* ---- set-up ---- */

/* _bind(reader, writer, rlock, wlock, sem, dumps, loads, pickler=None):
   (re)connect the native part to the queue's pipe, locks and pickler.
   rlock/wlock/sem: objects with acquire/release (wlock and sem may be
   None); pickler: a class whose instances may be kept and reused in
   place of dumps() (ForkingPickler), or None.  Starts a fresh feed:
   frames of an earlier one (e.g. the parent's, after fork) are dropped,
   and a fresh kept pickler (a forked child must not find the parent's
   marked busy). */
static PyObject *
queue_bind(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    static const char *const names[] = {"reader", "writer", "rlock", "wlock",
                                        "sem",    "dumps",  "loads", "pickler",
                                        "ring",   "counted"};
    static const cmp_argspec spec = CMP_ARGSPEC("_bind", names, 7);
    enum {
        READER,
        WRITER,
        RLOCK,
        WLOCK,
        SEM,
        DUMPS,
        LOADS,
        PICKLER,
        RING,
        COUNTED
    };
    QueueObject *q = (QueueObject *)op;
    PyObject *a[10];
    int counted = 0;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (!PyCallable_Check(a[DUMPS]) || !PyCallable_Check(a[LOADS])) {
        PyErr_SetString(PyExc_TypeError, "_bind(): dumps/loads not callable");
        return NULL;
    }
    if (a[RLOCK] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "_bind(): a reader lock is needed");
        return NULL;
    }
    if (cmp_arg_bool(a[COUNTED], 0, &counted) < 0) {
        return NULL;
    }
    if (counted &&
        (a[SEM] != Py_None || a[RING] == NULL || a[RING] == Py_None)) {
        PyErr_SetString(PyExc_ValueError,
                        "_bind(): a counted queue has a ring and no "
                        "size semaphore");
        return NULL;
    }
    PyObject *pickler_cls = a[PICKLER] != NULL ? a[PICKLER] : Py_None;
    if (pickler_cls != Py_None && !PyType_Check(pickler_cls)) {
        PyErr_SetString(PyExc_TypeError,
                        "_bind(): the pickler must be a class or None");
        return NULL;
    }
    qlock rl = {0}, sem = {0};
    qconn r = {0};
    PyObject *kept = NULL;
    FeedObject *fd = (FeedObject *)PyObject_CallNoArgs(q->st->QueueFeed_type);
    if (fd == NULL) {
        return NULL;
    }
    if (qlock_bind(&rl, a[RLOCK]) < 0 || qlock_bind(&sem, a[SEM]) < 0 ||
        qlock_bind(&fd->wl, a[WLOCK]) < 0) {
        goto error;
    }
    fd->writer = Py_NewRef(a[WRITER]);
    PyObject *ring = a[RING] != NULL ? a[RING] : Py_None;
    if (qconn_bind(&fd->w, a[WRITER]) < 0 || qconn_bind(&r, a[READER]) < 0 ||
        cmp_pickler_make(q->st, pickler_cls, &kept) < 0 ||
        qring_attach(&fd->shm, ring) < 0 || qring_attach(&q->shm, ring) < 0) {
        goto error;
    }
    /* robust pipe locks (queue_robust.c): both or neither */
    fd->wrec = cmp_semlock_record(q->st, a[WLOCK]);
    q->rrec = cmp_semlock_record(q->st, a[RLOCK]);
    if (fd->wrec == NULL || q->rrec == NULL) {
        fd->wrec = NULL;
        q->rrec = NULL;
    }
    q->wrec = fd->wrec;
    q->wsem = fd->wrec != NULL ? ((SemLockObject *)a[WLOCK])->handle
                               : CMP_SEM_NONE;
    Py_XSETREF(q->feed, fd);
    Py_XSETREF(q->reader, Py_NewRef(a[READER]));
    /* (the new ones in place before the old ones go: releasing those
       may run code that uses the queue) */
    qconn old_r = q->r;
    qlock old_rl = q->rl, old_sem = q->sem;
    q->r = r;
    q->rl = rl;
    q->sem = sem;
    Py_XDECREF(old_r.fileno);
    qlock_clear(&old_rl);
    qlock_clear(&old_sem);
    q->counted = fd->counted = counted && q->shm.attached;
    Py_XSETREF(q->dumps, Py_NewRef(a[DUMPS]));
    Py_XSETREF(q->loads, Py_NewRef(a[LOADS]));
    Py_XSETREF(q->kept, kept);
    Py_RETURN_NONE;

error:
    qlock_clear(&rl);
    qlock_clear(&sem);
    Py_XDECREF(r.fileno);
    Py_XDECREF(kept);
    Py_DECREF(fd);
    return NULL;
}

static PyObject *
queue_get_feed(PyObject *op, void *Py_UNUSED(closure))
{
    QueueObject *q = (QueueObject *)op;
    if (q->feed == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef((PyObject *)q->feed);
}

static PyObject *
queue_get_flag(PyObject *op, void *closure)
{
    QueueObject *q = (QueueObject *)op;
    return PyBool_FromLong(closure ? q->ignore_epipe : q->closed);
}

static int
queue_set_flag(PyObject *op, PyObject *value, void *closure)
{
    QueueObject *q = (QueueObject *)op;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete this flag");
        return -1;
    }
    int v = PyObject_IsTrue(value);
    if (v < 0) {
        return -1;
    }
    if (closure) {
        q->ignore_epipe = v;
    }
    else {
        q->closed = v;
    }
    return 0;
}

static PyMethodDef queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))queue_put,
     METH_FASTCALL | METH_KEYWORDS,
     "put(obj, block=True, timeout=None)\n--\n\n"
     "Put obj on the queue; raise queue.Full when no room came in time."},
    {"get", (PyCFunction)(void (*)(void))queue_get,
     METH_FASTCALL | METH_KEYWORDS,
     "get(block=True, timeout=None)\n--\n\n"
     "Remove and return an item; raise queue.Empty when none came in time."},
    {"_reserve", (PyCFunction)(void (*)(void))queue_reserve,
     METH_FASTCALL | METH_KEYWORDS,
     "_reserve(block=True, timeout=None)\n--\n\n"
     "The first half of put(): ValueError when closed, queue.Full when no "
     "room came in time; on success the caller owns one unit of room."},
    {"_put_acquired", queue_put_acquired, METH_O,
     "_put_acquired($self, obj, /)\n--\n\n"
     "put() for a caller that already holds a unit of the size semaphore."},
    {"_simple_put", simple_put, METH_O,
     "_simple_put($self, obj, /)\n--\n\n"
     "SimpleQueue.put: encode, then write the whole frame under the "
     "writer lock."},
    {"get_many", (PyCFunction)(void (*)(void))queue_get_many,
     METH_FASTCALL | METH_KEYWORDS,
     "get_many(block=True, timeout=None, max_messages_to_get=None)\n--\n\n"
     "Remove and return a list of the items there: at least one (waiting "
     "as get() does), at most max_messages_to_get (faster-fifo's API)."},
    {"put_many", (PyCFunction)(void (*)(void))queue_put_many,
     METH_FASTCALL | METH_KEYWORDS,
     "put_many(iterable, block=True, timeout=None)\n--\n\n"
     "Put every item of iterable, in order, as one write (faster-fifo's "
     "API); queue.Full when room for all did not come in time."},
    {"_poll", (PyCFunction)(void (*)(void))queue_poll,
     METH_FASTCALL | METH_KEYWORDS,
     "_poll(timeout=0.0)\n--\n\n"
     "Whether a message is there to read, waiting at most timeout."},
    {"_ring_leave", queue_ring_leave, METH_NOARGS,
     "_ring_leave($self, /)\n--\n\n"
     "Leave the shared-memory ring for the pipe; the bytes left in it."},
    {"_give_room", queue_give_room, METH_NOARGS,
     "_give_room($self, /)\n--\n\n"
     "A message put() counted was dropped: give its room back."},
    {"_count", queue_count, METH_NOARGS,
     "_count($self, /)\n--\n\n"
     "Messages put and not yet taken, for a counted queue; else None."},
    {"_ring_move", queue_ring_move, METH_NOARGS,
     "_ring_move($self, /)\n--\n\n"
     "With the reader lock held: move the ring's bytes into the pipe, as "
     "far as it takes them now; the bytes left in the ring."},
    {"_simple_get", simple_get, METH_NOARGS,
     "SimpleQueue.get: read one frame under the reader lock."},
    {"_bind", (PyCFunction)(void (*)(void))queue_bind,
     METH_FASTCALL | METH_KEYWORDS,
     "_bind(reader, writer, rlock, wlock, sem, dumps, loads, pickler=None, "
     "ring=None, counted=False)\n--\n\n(Re)connect to the pipe ends, locks "
     "and pickler.  pickler: a class whose instances may be kept and reused "
     "in place of dumps() (ForkingPickler), or None; ring: a block of shared "
     "memory holding the queue's ring (ring.h), or None; counted: no size "
     "semaphore (sem None), the messages counted in the ring."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef queue_getset[] = {
    {"_feed", queue_get_feed, NULL, "the QueueFeed of this process", NULL},
    {"_closed", queue_get_flag, queue_set_flag, "close() was called", NULL},
    {"_ignore_epipe", queue_get_flag, queue_set_flag,
     "drop messages silently once the reading end is gone", (void *)1},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot queue_slots[] = {
    {Py_tp_doc, "Native base of the cmultiprocessing queues."},
    {Py_tp_new, queue_new},
    {Py_tp_dealloc, queue_dealloc},
    {Py_tp_traverse, queue_traverse},
    {Py_tp_clear, queue_clear},
    {Py_tp_methods, queue_methods},
    {Py_tp_getset, queue_getset},
    {0, NULL},
};

static PyType_Spec queue_spec = {
    .name = "_cmultiprocessing.QueueBase",
    .basicsize = sizeof(QueueObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = queue_slots,
};

/* Raise queue.Empty or queue.Full.  The queue module (which imports
   threading and heapq) is imported the first time one is raised, not when
   this module loads: a spawned child that never sees an empty or full queue
   does not pay for it. */
static void
raise_queue_exception(cmp_state *st, int full)
{
    if (st->QueueEmpty == NULL || st->QueueFull == NULL) {
        PyObject *mod = PyImport_ImportModule("queue");
        if (mod == NULL) {
            return;
        }
        PyObject *empty = PyObject_GetAttrString(mod, "Empty");
        PyObject *fullexc = empty ? PyObject_GetAttrString(mod, "Full") : NULL;
        Py_DECREF(mod);
        if (fullexc == NULL) {
            Py_XDECREF(empty);
            return;
        }
        Py_XSETREF(st->QueueEmpty, empty);
        Py_XSETREF(st->QueueFull, fullexc);
    }
    PyErr_SetNone(full ? st->QueueFull : st->QueueEmpty);
}

int
cmp_queue_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    /* _pickle, not pickle: pickle.py pulls in re, enum and struct, which a
       spawned child would otherwise pay for at start (pickle.dumps is
       _pickle.dumps). */
    PyObject *pickle = PyImport_ImportModule("_pickle");
    if (pickle == NULL) {
        return -1;
    }
    st->PickleDumps = PyObject_GetAttrString(pickle, "dumps");
    Py_DECREF(pickle);
    if (st->PickleDumps == NULL) {
        return -1;
    }
    if (queue_feeder_exec(module) < 0) {
        return -1;
    }
    st->Queue_type = PyType_FromModuleAndSpec(module, &queue_spec, NULL);
    if (st->Queue_type == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "QueueBase", st->Queue_type) < 0) {
        return -1;
    }
    /* the bytes of a queue's ring, or 0 where queues keep to pipes */
    return PyModule_AddIntConstant(
        module, "QUEUE_RING_BYTES",
        cmp_addr_wait_available() ? (long)CMP_RING_BYTES : 0);
}
