/*
 * queue_feeder.c -- QueueFeed: the frames this process still has to write
 * into a queue's pipe, in order, and the loop the feeder thread runs
 * (_run) to write them; and the calls into the queue's lock objects.
 *
 * QueueFeed is a separate object from the queue so that the feeder thread
 * does not keep the queue alive (the queue's finalizer stops the thread).
 * put() writes a frame straight into the pipe when nothing of this process
 * is still waiting to be sent (queue.c); only what the pipe does not take
 * comes here.
 */
#include "queue.h"
#include "semlock.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* Calls into the lock objects                                         */

int
qlock_bind(qlock *l, PyObject *lock)
{
    memset(l, 0, sizeof(*l));
    if (lock == Py_None) {
        return 0;
    }
    l->acquire = PyObject_GetAttrString(lock, "acquire");
    if (l->acquire == NULL) {
        return -1;
    }
    l->release = PyObject_GetAttrString(lock, "release");
    if (l->release == NULL) {
        Py_CLEAR(l->acquire);
        return -1;
    }
    /* the package's own locks: no Python call (about 40 ns a call, six
       calls a message), and no check at each call for what the methods
       are (about 8 ns a message more) */
    l->take = cmp_semlock_bound(l->acquire, 1);
    l->give = cmp_semlock_bound(l->release, 0);
    return 0;
}

void
qlock_clear(qlock *l)
{
    l->take = l->give = NULL;
    Py_CLEAR(l->acquire);
    Py_CLEAR(l->release);
}

int
qlock_take(const qlock *l, int block, PyObject *timeout)
{
    if (l->take != NULL && (timeout == NULL || timeout == Py_None)) {
        return cmp_semlock_take(l->take, block, 0, 0.0);
    }
    PyObject *args[3] = {NULL, block ? Py_True : Py_False, timeout};
    size_t nargs = timeout != NULL && timeout != Py_None ? 2 : 1;
    if (block && nargs == 1) {
        nargs = 0; /* plain blocking acquire() */
    }
    PyObject *r = PyObject_Vectorcall(
        l->acquire, args + 1, nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        return -1;
    }
    int ok = r == Py_True ? 1 : r == Py_False ? 0 : PyObject_IsTrue(r);
    Py_DECREF(r);
    return ok;
}

int
qlock_take_briefly(const qlock *l, double seconds)
{
    if (l->take != NULL) {
        return cmp_semlock_take(l->take, 1, 1, seconds);
    }
    PyObject *timeout = PyFloat_FromDouble(seconds);
    if (timeout == NULL) {
        return -1;
    }
    int got = qlock_take(l, 1, timeout);
    Py_DECREF(timeout);
    return got;
}

int
qlock_give(const qlock *l)
{
    if (l->give != NULL) {
        if (cmp_semlock_give(l->give) < 0) {
            return -1;
        }
        PyObject *r = cmp_semlock_released();
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    PyObject *r = PyObject_CallNoArgs(l->release);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

void
qlock_give_keeping_error(const qlock *l)
{
    if (l->release == NULL) {
        return;
    }
    cmp_saved_exc saved;
    cmp_exc_save(&saved);
    if (qlock_give(l) < 0) {
        PyErr_WriteUnraisable(l->release);
    }
    cmp_exc_restore(&saved);
}

int
qconn_bind(qconn *c, PyObject *conn)
{
    c->fileno = PyObject_GetAttrString(conn, "fileno");
    c->native = c->fileno != NULL ? cmp_conn_of_fileno(c->fileno) : NULL;
    return c->fileno != NULL ? 0 : -1;
}

int
qconn_handle(const qconn *c, cmp_handle_t *out)
{
    if (c->native != NULL) {
        return cmp_conn_handle(c->native, out);
    }
    PyObject *r = PyObject_CallNoArgs(c->fileno);
    if (r == NULL) {
        return -1;
    }
    long long v = PyLong_AsLongLong(r);
    Py_DECREF(r);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    int err = cmp_io_handle_from_value(v, out);
    if (err != 0) {
        cmp_raise_oserror(err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* QueueFeed                                                           */

static qframe *
feed_at(FeedObject *fd, Py_ssize_t i)
{
    return &fd->ring[(fd->first + i) % fd->cap];
}

int
feed_push(FeedObject *fd, qframe *f)
{
    if (fd->count == fd->cap) {
        Py_ssize_t ncap = fd->cap ? fd->cap * 2 : 16;
        qframe *nring = PyMem_Calloc((size_t)ncap, sizeof(qframe));
        if (nring == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < fd->count; i++) {
            nring[i] = *feed_at(fd, i);
        }
        PyMem_Free(fd->ring);
        fd->ring = nring;
        fd->cap = ncap;
        fd->first = 0;
    }
    fd->ring[(fd->first + fd->count) % fd->cap] = *f;
    fd->count++;
    memset(f, 0, sizeof(*f)); /* the ring owns the references now */
    if (fd->sleeping && !fd->wake_posted) {
        fd->wake_posted = 1;
        PyThread_release_lock(fd->wake);
    }
    return 0;
}

static void
feed_pop(FeedObject *fd)
{
    qframe *f = feed_at(fd, 0);
    qframe_clear(f);
    memset(f, 0, sizeof(*f));
    fd->first = (fd->first + 1) % fd->cap;
    fd->count--;
}

static void
feed_drop_all(FeedObject *fd)
{
    while (fd->count > 0) {
        feed_pop(fd);
    }
}

static PyObject *
feed_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    FeedObject *fd = (FeedObject *)tp->tp_alloc(tp, 0);
    if (fd == NULL) {
        return NULL;
    }
    fd->wake = PyThread_allocate_lock();
    if (fd->wake == NULL) {
        Py_DECREF(fd);
        return PyErr_NoMemory();
    }
    /* held = "no wake-up posted" */
    PyThread_acquire_lock(fd->wake, WAIT_LOCK);
    fd->handover = PyThread_allocate_lock();
    if (fd->handover == NULL) {
        Py_DECREF(fd);
        return PyErr_NoMemory();
    }
    PyThread_acquire_lock(fd->handover, WAIT_LOCK);
    return (PyObject *)fd;
}

static int
feed_traverse(PyObject *op, visitproc visit, void *arg)
{
    FeedObject *fd = (FeedObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(fd->writer);
    Py_VISIT(fd->w.fileno);
    Py_VISIT(fd->wl.acquire);
    Py_VISIT(fd->wl.release);
    Py_VISIT(fd->failed_obj);
    for (Py_ssize_t i = 0; i < fd->count; i++) {
        Py_VISIT(feed_at(fd, i)->obj);
    }
    return 0;
}

static int
feed_clear(PyObject *op)
{
    FeedObject *fd = (FeedObject *)op;
    Py_CLEAR(fd->writer);
    fd->w.native = NULL;
    Py_CLEAR(fd->w.fileno);
    qlock_clear(&fd->wl);
    Py_CLEAR(fd->failed_obj);
    if (fd->ring != NULL && !fd->writing) {
        feed_drop_all(fd);
    }
    return 0;
}

static void
feed_dealloc(PyObject *op)
{
    FeedObject *fd = (FeedObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)feed_clear(op);
    PyMem_Free(fd->ring);
    PyMem_Free(fd->stage);
    qring_release(&fd->shm);
    if (fd->wake != NULL) {
        PyThread_free_lock(fd->wake);
    }
    if (fd->handover != NULL) {
        PyThread_free_lock(fd->handover);
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* The feeder has the GIL again: wake the put() waiting to hand it over. */
static void
feed_handed_over(FeedObject *fd)
{
    if (fd->handover_waiting) {
        fd->handover_waiting = 0;
        PyThread_release_lock(fd->handover);
    }
}

/* Sleep until a frame is pushed, stop is asked, or FEED_IDLE_US pass. */
static void
feed_sleep(FeedObject *fd)
{
    fd->sleeping = 1;
    PyLockStatus st;
    Py_BEGIN_ALLOW_THREADS
    st = PyThread_acquire_lock_timed(fd->wake, FEED_IDLE_US, 0);
    fd->wants_gil = st == PY_LOCK_ACQUIRED; /* woken: frames to write */
    Py_END_ALLOW_THREADS
    fd->wants_gil = 0;
    feed_handed_over(fd);
    fd->sleeping = 0;
    if (st == PY_LOCK_ACQUIRED) {
        fd->wake_posted = 0;
    }
}

/* Called by put() with the GIL, when it leaves frames to the feeder: if
   the feeder is waiting for the GIL, let go of it until the feeder has
   it (a millisecond at most). */
void
feed_hand_over(FeedObject *fd)
{
    if (!fd->wants_gil || fd->handover_waiting) {
        return;
    }
    fd->handover_waiting = 1;
    PyLockStatus st;
    Py_BEGIN_ALLOW_THREADS
    st = PyThread_acquire_lock_timed(fd->handover, 1000, 0);
    Py_END_ALLOW_THREADS
    if (st == PY_LOCK_ACQUIRED) {
        return; /* held again: nothing to report */
    }
    if (fd->handover_waiting) {
        fd->handover_waiting = 0; /* the feeder did not get there */
    }
    else {
        /* it released the lock after we stopped waiting: take it back */
        (void)PyThread_acquire_lock(fd->handover, NOWAIT_LOCK);
    }
}

/* Drop the head frame after a failure, keeping its object for the error
   hook; the writer lock it held (if any) is released. */
static void
feed_fail_head(FeedObject *fd)
{
    qframe *f = feed_at(fd, 0);
    if (f->holds_wlock) {
        f->holds_wlock = 0;
        qlock_give_keeping_error(&fd->wl);
    }
    Py_XSETREF(fd->failed_obj, Py_XNewRef(f->obj));
    feed_pop(fd);
}

/* Take the writer lock for the head frame unless it already holds it
   (a put that wrote part of it left the lock held).  The head is marked
   as holding it. */
static int
feed_lock_head(FeedObject *fd)
{
    if (feed_at(fd, 0)->holds_wlock || fd->wl.acquire == NULL) {
        return 0;
    }
    int got = qlock_take(&fd->wl, 1, NULL);
    if (got <= 0) {
        if (got == 0) {
            PyErr_SetString(PyExc_RuntimeError,
                            "queue writer lock was not acquired");
        }
        feed_fail_head(fd);
        return -1;
    }
    /* the ring may have grown while we waited: index again */
    feed_at(fd, 0)->holds_wlock = 1;
    if (qrobust_write_settle(fd->wrec) < 0) {
        feed_fail_head(fd);
        return -1;
    }
    return 0;
}

/* One gathered write of the frames at the head of the ring, under the
   writer lock, with the GIL released. */
static int
feed_write_batch(FeedObject *fd)
{
    if (feed_lock_head(fd) < 0) {
        return -1;
    }
    cmp_handle_t h;
    if (qconn_handle(&fd->w, &h) < 0) {
        feed_fail_head(fd);
        return -1;
    }
    cmp_iobuf pieces[CMP_IO_MAX_PIECES];
    int npieces = 0;
    size_t staged = 0;
    Py_ssize_t nframes = 0, bytes = 0;
    while (nframes < fd->count && npieces + 3 <= CMP_IO_MAX_PIECES &&
           bytes < FEED_BATCH_BYTES &&
           staged + FEED_COALESCE + 29 <= FEED_STAGE_BYTES) {
        qframe *f = feed_at(fd, nframes);
        cmp_iobuf own[3];
        unsigned char scratch[29];
        int n = qframe_pieces(f, own, scratch);
        for (int k = 0; k < n; k++) {
            if (own[k].len > FEED_COALESCE) {
                pieces[npieces++] = own[k];
                continue;
            }
            /* short pieces are copied together: a batch of small messages
               is one long write, not a piece each */
            unsigned char *at = fd->stage + staged;
            memcpy(at, own[k].base, own[k].len);
            staged += own[k].len;
            cmp_iobuf *last = npieces > 0 ? &pieces[npieces - 1] : NULL;
            if (last != NULL &&
                (const unsigned char *)last->base + last->len == at) {
                last->len += own[k].len;
            }
            else {
                pieces[npieces].base = at;
                pieces[npieces].len = own[k].len;
                npieces++;
            }
        }
        bytes += qframe_total(f) - f->done;
        nframes++;
    }
    size_t total = 0;
    int err = 0;
    cmp_wire w = {h,    CMP_WIRE_SHARED,    NULL, NULL, NULL, NULL,
                  NULL, qring_get(&fd->shm)};
    fd->writing = 1;
    if (bytes > QUEUE_ATOMIC_WRITE) {
        qrobust_write_mark(fd->wrec);
    }
    Py_BEGIN_ALLOW_THREADS
    /* (not the main thread: no signal handlers to run, EINTR is retried) */
    err = cmp_wire_write_all_nogil(&w, pieces, npieces, &total);
    fd->wants_gil = 1;
    Py_END_ALLOW_THREADS
    fd->wants_gil = 0;
    feed_handed_over(fd);
    fd->writing = 0;
    /* the lock was held for the whole batch: it belongs to no frame now */
    feed_at(fd, 0)->holds_wlock = 0;
    while (fd->count > 0) {
        qframe *f = feed_at(fd, 0);
        size_t rest = (size_t)(qframe_total(f) - f->done);
        if (total < rest) {
            f->done += (Py_ssize_t)total;
            break;
        }
        total -= rest;
        feed_pop(fd);
        if (--nframes == 0) {
            break;
        }
    }
    if (err != 0) {
        cmp_raise_oserror(err);
        qlock_give_keeping_error(&fd->wl);
        if (fd->count > 0) {
            feed_fail_head(fd);
        }
        return -1;
    }
    qrobust_write_end(fd->wrec);
    if (fd->wl.release != NULL && qlock_give(&fd->wl) < 0) {
        return -1;
    }
    return 0;
}

/* _run(): write frames until stop() and the ring is empty (returns True)
   or until a failure (raises; failed_obj names the dropped object). */
static PyObject *
feed_run(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FeedObject *fd = (FeedObject *)op;
    if (fd->stage == NULL) {
        /* (made by put() before it starts the thread) */
        fd->stage = PyMem_Malloc(FEED_STAGE_BYTES);
        if (fd->stage == NULL) {
            return PyErr_NoMemory();
        }
    }
    for (;;) {
        if (fd->count == 0) {
            if (fd->stop) {
                Py_RETURN_TRUE;
            }
            feed_sleep(fd);
            continue;
        }
        if (feed_write_batch(fd) < 0) {
            return NULL;
        }
    }
}

static PyObject *
feed_stop(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FeedObject *fd = (FeedObject *)op;
    fd->stop = 1;
    if (fd->sleeping && !fd->wake_posted) {
        fd->wake_posted = 1;
        PyThread_release_lock(fd->wake);
    }
    Py_RETURN_NONE;
}

static PyObject *
feed_take_failed(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FeedObject *fd = (FeedObject *)op;
    PyObject *obj = fd->failed_obj;
    fd->failed_obj = NULL;
    return obj != NULL ? obj : Py_NewRef(Py_None);
}

static PyObject *
feed_get_pending(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((FeedObject *)op)->count);
}

static PyObject *
feed_get_started(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((FeedObject *)op)->started);
}

static PyObject *
feed_get_used(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((FeedObject *)op)->used);
}

static PyObject *
feed_get_stopped(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((FeedObject *)op)->stop);
}

/* _count_out(): a frame of a counted queue (ring.h's cmp_ring_count_puts)
   was dropped: count it out, as the size semaphore's unit would be given
   back (the feeder thread holds the feed, not the queue). */
static PyObject *
feed_count_out(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FeedObject *fd = (FeedObject *)op;
    if (fd->counted) {
        cmp_ring_count_gets(&fd->shm.ring, 1);
    }
    Py_RETURN_NONE;
}

static PyMethodDef feed_methods[] = {
    {"_count_out", feed_count_out, METH_NOARGS,
     "A dropped frame of a counted queue: count it out of the queue."},
    {"_run", feed_run, METH_NOARGS,
     "Write pending frames until stopped and drained (True); raises on a "
     "failure after dropping the frame concerned."},
    {"_stop", feed_stop, METH_NOARGS,
     "Ask _run to return once everything pending is written."},
    {"_take_failed", feed_take_failed, METH_NOARGS,
     "The object whose frame the last failure dropped (once)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef feed_getset[] = {
    {"pending", feed_get_pending, NULL, "frames not yet fully written", NULL},
    {"started", feed_get_started, NULL, "a feeder thread was started", NULL},
    {"used", feed_get_used, NULL, "put() was called with this feed", NULL},
    {"stopped", feed_get_stopped, NULL, "_stop() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot feed_slots[] = {
    {Py_tp_doc, "Frames of one queue waiting for its feeder thread."},
    {Py_tp_new, feed_new},
    {Py_tp_dealloc, feed_dealloc},
    {Py_tp_traverse, feed_traverse},
    {Py_tp_clear, feed_clear},
    {Py_tp_methods, feed_methods},
    {Py_tp_getset, feed_getset},
    {0, NULL},
};

static PyType_Spec feed_spec = {
    .name = "_cmultiprocessing.QueueFeed",
    .basicsize = sizeof(FeedObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = feed_slots,
};

int
queue_feeder_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    st->QueueFeed_type = PyType_FromModuleAndSpec(module, &feed_spec, NULL);
    if (st->QueueFeed_type == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "QueueFeed", st->QueueFeed_type);
}
