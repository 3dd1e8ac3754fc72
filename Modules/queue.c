/*
 * queue.c -- the native body of cmultiprocessing.queues.
 *
 * Two types:
 *
 *   QueueBase  the base class of queues.Queue, JoinableQueue and
 *              SimpleQueue.  put() encodes the object in the calling
 *              thread and, when nothing of this process is still waiting
 *              to be sent, writes the frame straight into the pipe without
 *              blocking (under the writer lock, taken without waiting).
 *              Only what the pipe does not take goes to the feeder.  get()
 *              reads one frame under the reader lock, waiting with the GIL
 *              released.
 *   QueueFeed  the frames this process still has to write, in order, and
 *              the loop the feeder thread runs (_run) to write them.  It is
 *              a separate object so that the feeder thread does not keep
 *              the queue alive (the queue's finalizer stops the thread).
 *
 * Wire format: the stdlib's Connection framing (4-byte big-endian length,
 * or -1 and an 8-byte length), so the queue's _reader and _writer stay
 * usable as Connections.  The payload is a pickle: ForkingPickler.dumps()
 * in general, or, for exact None/bool/int/float/bytes/str, the equivalent
 * pickle opcodes written here directly (readable by any pickle.loads); get()
 * recognises exactly those encodings and decodes them without pickle.
 *
 * Locks and the size semaphore are the synchronize objects of the queue;
 * their bound acquire/release methods (the C SemLock's) are called here.
 */
#include "cmp.h"
#include "platform/queue.h"
#include "spin.h"

#include <string.h>

static void raise_queue_exception(cmp_state *st, int full);

/* Frames no longer than this are written by one system call or not at
   all (the POSIX minimum of PIPE_BUF). */
#define QUEUE_ATOMIC_WRITE 512
/* At most this many bytes per gathered write of the feeder.  The feeder
   needs the GIL between two writes, and waits for it up to the switch
   interval (5 ms) while the thread that puts is busy: each write should
   keep the reader busy for about as long.  Pieces of frames up to
   FEED_COALESCE bytes are copied into a staging buffer of
   FEED_STAGE_BYTES, so that one write carries thousands of small
   messages (else the 64 pieces of a write would be 21 messages). */
#define FEED_BATCH_BYTES (16 << 20)
#define FEED_COALESCE 1024
#define FEED_STAGE_BYTES (128 << 10)
/* Frames at least this long are read in two steps so that a bytes
   payload lands directly in its final object. */
#define QUEUE_DIRECT_READ 1024
/* The first frame at least this long makes the producer ask for a pipe
   buffer of QUEUE_PIPE_WANT bytes: with the default 64 KiB a 64 KiB
   message does not fit, and every message costs the writer and the reader
   a sleep and a wake-up each.  Queues of small messages keep the default
   (the kernel counts pipe buffers against a per-user budget). */
#define QUEUE_GROW_AT (16 << 10)
#define QUEUE_PIPE_WANT (1 << 20)
/* The kernel counts pipe buffers against a per-user budget
   (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by default); past it, every
   new pipe of the user gets a 8 KiB buffer.  So the queues of one process
   grow their pipes by QUEUE_GROW_BUDGET at most in all, given back when
   a queue object goes away (a C integer, not a Python object: it is the
   process's budget, whatever the interpreter; cmp_process_lock() guards
   it, interpreters with a GIL of their own sharing it). */
#define QUEUE_GROW_BUDGET ((size_t)16 << 20)
static size_t pipe_growth_held = 0;
/* The feeder re-checks its state at least this often (microseconds). */
#define FEED_IDLE_US 500000

/* pickle opcodes used by the direct encodings */
#define OP_PROTO 0x80
#define OP_STOP 0x2e        /* . */
#define OP_NONE 0x4e        /* N */
#define OP_TRUE 0x88
#define OP_FALSE 0x89
#define OP_BININT1 0x4b     /* K */
#define OP_BININT2 0x4d     /* M */
#define OP_BININT 0x4a      /* J */
#define OP_BINFLOAT 0x47    /* G */
#define OP_SHORT_BYTES 0x43 /* C */
#define OP_BINBYTES 0x42    /* B */
#define OP_SHORT_STR 0x8c
#define OP_BINSTR 0x58      /* X */
#define DIRECT_PROTO 4

/* ------------------------------------------------------------------ */
/* Frames                                                              */

/* One message as it goes into the pipe: pre (frame header and pickle
   prefix), data (borrowed from owner), post (pickle STOP or nothing). */
typedef struct {
    unsigned char pre[28];
    unsigned char post[1];
    unsigned char npre, npost;
    const char *data;
    Py_ssize_t ndata;
    PyObject *owner;   /* keeps data alive; NULL when data is NULL */
    Py_buffer view;    /* when has_view: data is view.buf */
    int has_view;
    int holds_wlock;   /* a partial write left the writer lock held */
    PyObject *obj;     /* the object put, for the error hook */
    Py_ssize_t done;   /* bytes of the frame already in the pipe */
} qframe;

static Py_ssize_t
frame_total(const qframe *f)
{
    return (Py_ssize_t)f->npre + f->ndata + (Py_ssize_t)f->npost;
}

static void
frame_clear(qframe *f)
{
    if (f->has_view) {
        PyBuffer_Release(&f->view);
        f->has_view = 0;
    }
    Py_CLEAR(f->owner);
    Py_CLEAR(f->obj);
    f->data = NULL;
    f->ndata = 0;
}

static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void
put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint64_t
get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Put the Connection header for a body of `body` bytes in front of the
   `nprefix` pickle bytes already at f->pre + 12. */
static void
frame_set_header(qframe *f, const unsigned char *prefix, int nprefix)
{
    Py_ssize_t body = nprefix + f->ndata + f->npost;
    int h;
    if (body <= 0x7fffffff) {
        put_be32(f->pre, (uint32_t)body);
        h = 4;
    }
    else {
        uint64_t big = (uint64_t)body;
        put_be32(f->pre, 0xffffffffu);
        put_be32(f->pre + 4, (uint32_t)(big >> 32));
        put_be32(f->pre + 8, (uint32_t)big);
        h = 12;
    }
    memcpy(f->pre + h, prefix, (size_t)nprefix);
    f->npre = (unsigned char)(h + nprefix);
}

/* The pickle of an exact None/bool/int/float/bytes/str, without pickle.
   Returns 1 when done, 0 when obj needs the general pickler. */
static int
encode_direct(PyObject *obj, qframe *f)
{
    unsigned char p[16];
    int n = 2;
    p[0] = OP_PROTO;
    p[1] = DIRECT_PROTO;
    if (obj == Py_None) {
        p[n++] = OP_NONE;
    }
    else if (obj == Py_True || obj == Py_False) {
        p[n++] = obj == Py_True ? OP_TRUE : OP_FALSE;
    }
    else if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        if (v >= 0 && v < 0x100) {
            p[n++] = OP_BININT1;
            p[n++] = (unsigned char)v;
        }
        else if (v >= 0 && v < 0x10000) {
            p[n++] = OP_BININT2;
            put_le(p + n, (uint64_t)v, 2);
            n += 2;
        }
        else if (v >= -0x7fffffffL - 1 && v <= 0x7fffffffL) {
            p[n++] = OP_BININT;
            put_le(p + n, (uint64_t)(uint32_t)(int32_t)v, 4);
            n += 4;
        }
        else {
            return 0;
        }
    }
    else if (PyFloat_CheckExact(obj)) {
        p[n++] = OP_BINFLOAT;
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(obj), (char *)p + n, 0) < 0) {
            PyErr_Clear();
            return 0;
        }
        n += 8;
    }
    else {
        const char *data;
        Py_ssize_t len;
        int is_bytes = PyBytes_CheckExact(obj);
        if (is_bytes) {
            data = PyBytes_AS_STRING(obj);
            len = PyBytes_GET_SIZE(obj);
        }
        else if (PyUnicode_CheckExact(obj)) {
            data = PyUnicode_AsUTF8AndSize(obj, &len);
            if (data == NULL) {
                /* lone surrogates: pickle's own escaping applies */
                PyErr_Clear();
                return 0;
            }
        }
        else {
            return 0;
        }
        if ((uint64_t)len > 0xffffffffu) {
            return 0;
        }
        if (len < 0x100) {
            p[n++] = is_bytes ? OP_SHORT_BYTES : OP_SHORT_STR;
            p[n++] = (unsigned char)len;
        }
        else {
            p[n++] = is_bytes ? OP_BINBYTES : OP_BINSTR;
            put_le(p + n, (uint64_t)len, 4);
            n += 4;
        }
        f->data = data;
        f->ndata = len;
        f->owner = Py_NewRef(obj);
        f->post[0] = OP_STOP;
        f->npost = 1;
        frame_set_header(f, p, n);
        return 1;
    }
    p[n++] = OP_STOP;
    frame_set_header(f, p, n);
    return 1;
}

/* True for exact None/bool/int/float/str/bytes and exact tuple/list/
   dict/set/frozenset holding only such things (small and shallow).  The
   C pickler saves these types without looking at a dispatch table or a
   reducer_override, so pickle.dumps() gives exactly what ForkingPickler
   would, without building a pickler object per message. */
static int
is_plain(PyObject *obj, int depth, Py_ssize_t *budget)
{
    if (--*budget < 0) {
        return 0;
    }
    if (obj == Py_None || PyBool_Check(obj) || PyLong_CheckExact(obj) ||
        PyFloat_CheckExact(obj) || PyUnicode_CheckExact(obj) ||
        PyBytes_CheckExact(obj)) {
        return 1;
    }
    if (depth == 0) {
        return 0;
    }
    if (PyTuple_CheckExact(obj) || PyList_CheckExact(obj)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
        PyObject **items = PySequence_Fast_ITEMS(obj);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!is_plain(items[i], depth - 1, budget)) {
                return 0;
            }
        }
        return 1;
    }
    if (PyDict_CheckExact(obj)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(obj, &pos, &k, &v)) {
            if (!is_plain(k, depth - 1, budget) ||
                !is_plain(v, depth - 1, budget)) {
                return 0;
            }
        }
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* A pickler kept between puts                                         */

/* Building a ForkingPickler (a BytesIO, the pickler, its dispatch-table
   snapshot made in Python) costs more than pickling a small object, so a
   queue keeps one, writing into a Sink, and only clears its memo between
   messages.  It is rebuilt when the reducer tables it copied changed
   (their sizes, or ForkingPickler._generation that register() bumps), and
   is not used while busy: by another thread whose reducer let go of the
   GIL, or by a put() made from inside a reducer.  Those calls, and queues
   bound without a pickler class, go through dumps(). */

/* The file the kept pickler writes into: it keeps what it is given. */
typedef struct {
    PyObject_HEAD
    PyObject *chunks; /* list of bytes */
} SinkObject;

static PyObject *
sink_write(PyObject *op, PyObject *data)
{
    SinkObject *sk = (SinkObject *)op;
    /* bytes as they are; anything else (a bytearray) copied now, as it
       may change before the frame is written */
    PyObject *b = PyBytes_CheckExact(data) ? Py_NewRef(data)
                                           : PyBytes_FromObject(data);
    if (b == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    int r = PyList_Append(sk->chunks, b);
    Py_DECREF(b);
    return r < 0 ? NULL : PyLong_FromSsize_t(n);
}

static int
sink_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((SinkObject *)op)->chunks);
    return 0;
}

static int
sink_clear(PyObject *op)
{
    Py_CLEAR(((SinkObject *)op)->chunks);
    return 0;
}

static void
sink_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)sink_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef sink_methods[] = {
    {"write", sink_write, METH_O, "Keep one piece of the pickle."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot sink_slots[] = {
    {Py_tp_doc, "Where a queue's kept pickler writes."},
    {Py_tp_dealloc, sink_dealloc},
    {Py_tp_traverse, sink_traverse},
    {Py_tp_clear, sink_clear},
    {Py_tp_methods, sink_methods},
    {0, NULL},
};

static PyType_Spec sink_spec = {
    .name = "_cmultiprocessing._QueueSink",
    .basicsize = sizeof(SinkObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sink_slots,
};

typedef struct {
    PyObject *cls;          /* the pickler class; NULL: none is kept */
    PyObject *copyreg;      /* the two reducer tables its instances copy */
    PyObject *extra;
    SinkObject *sink;
    PyObject *dump;         /* bound methods of the kept pickler, or NULL */
    PyObject *clear_memo;
    long generation;        /* cls._generation when it was made */
    Py_ssize_t copyreg_size, extra_size;
    int busy;
} qpickler;

static int
qpickler_traverse(qpickler *qp, visitproc visit, void *arg)
{
    Py_VISIT(qp->cls);
    Py_VISIT(qp->copyreg);
    Py_VISIT(qp->extra);
    Py_VISIT(qp->sink);
    Py_VISIT(qp->dump);
    Py_VISIT(qp->clear_memo);
    return 0;
}

static void
qpickler_drop(qpickler *qp)
{
    Py_CLEAR(qp->dump);
    Py_CLEAR(qp->clear_memo);
}

static void
qpickler_clear(qpickler *qp)
{
    qpickler_drop(qp);
    Py_CLEAR(qp->cls);
    Py_CLEAR(qp->copyreg);
    Py_CLEAR(qp->extra);
    Py_CLEAR(qp->sink);
    qp->busy = 0;
}

/* Keep picklers of class `cls` (None: none).  A class without the reducer
   tables of cmultiprocessing.reduction.ForkingPickler is not kept: there
   would be nothing to tell a stale one by. */
static int
qpickler_set_class(cmp_state *st, qpickler *qp, PyObject *cls)
{
    qpickler_clear(qp);
    if (cls == Py_None) {
        return 0;
    }
    PyObject *copyreg = PyObject_GetAttrString(cls, "_copyreg_dispatch_table");
    PyObject *extra = copyreg ? PyObject_GetAttrString(cls, "_extra_reducers")
                              : NULL;
    if (extra == NULL || !PyDict_Check(copyreg) || !PyDict_Check(extra)) {
        PyErr_Clear();
        Py_XDECREF(copyreg);
        Py_XDECREF(extra);
        return 0;
    }
    PyTypeObject *tp = (PyTypeObject *)st->QueueSink_type;
    SinkObject *sink = (SinkObject *)tp->tp_alloc(tp, 0);
    if (sink == NULL) {
        Py_DECREF(copyreg);
        Py_DECREF(extra);
        return -1;
    }
    sink->chunks = PyList_New(0);
    if (sink->chunks == NULL) {
        Py_DECREF(sink);
        Py_DECREF(copyreg);
        Py_DECREF(extra);
        return -1;
    }
    qp->cls = Py_NewRef(cls);
    qp->copyreg = copyreg;
    qp->extra = extra;
    qp->sink = sink;
    return 0;
}

/* cls._generation, or -1 when it has none. */
static long
qpickler_generation(PyObject *cls)
{
    PyObject *g = PyObject_GetAttrString(cls, "_generation");
    long v = -1;
    if (g != NULL && PyLong_Check(g)) {
        v = PyLong_AsLong(g);
    }
    Py_XDECREF(g);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        v = -1;
    }
    return v;
}

/* 1 when a current pickler is kept (made now if needed), else 0. */
static int
qpickler_ready(qpickler *qp)
{
    if (qp->cls == NULL || qp->busy) {
        return 0;
    }
    long gen = qpickler_generation(qp->cls);
    Py_ssize_t ncopy = PyDict_Size(qp->copyreg);
    Py_ssize_t nextra = PyDict_Size(qp->extra);
    if (gen == -1) {
        qpickler_drop(qp);
        return 0;
    }
    if (qp->dump != NULL && gen == qp->generation &&
        ncopy == qp->copyreg_size && nextra == qp->extra_size) {
        return 1;
    }
    qpickler_drop(qp);
    PyObject *pickler = PyObject_CallOneArg(qp->cls, (PyObject *)qp->sink);
    if (pickler == NULL) {
        PyErr_Clear(); /* dumps() will make one and say what is wrong */
        return 0;
    }
    qp->dump = PyObject_GetAttrString(pickler, "dump");
    qp->clear_memo = qp->dump ? PyObject_GetAttrString(pickler, "clear_memo")
                              : NULL;
    Py_DECREF(pickler);
    if (qp->clear_memo == NULL) {
        PyErr_Clear();
        qpickler_drop(qp);
        return 0;
    }
    qp->generation = gen;
    qp->copyreg_size = ncopy;
    qp->extra_size = nextra;
    return 1;
}

/* The sink's chunks as one bytes object; the sink is emptied. */
static PyObject *
qpickler_take_output(SinkObject *sink)
{
    PyObject *chunks = sink->chunks;
    Py_ssize_t n = PyList_GET_SIZE(chunks);
    PyObject *out;
    if (n == 1) {
        out = Py_NewRef(PyList_GET_ITEM(chunks, 0));
    }
    else {
        Py_ssize_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            total += PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, i));
        }
        out = PyBytes_FromStringAndSize(NULL, total);
        if (out != NULL) {
            char *p = PyBytes_AS_STRING(out);
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *c = PyList_GET_ITEM(chunks, i);
                memcpy(p, PyBytes_AS_STRING(c), (size_t)PyBytes_GET_SIZE(c));
                p += PyBytes_GET_SIZE(c);
            }
        }
    }
    (void)PyList_SetSlice(chunks, 0, n, NULL);
    return out;
}

/* Forget what the kept pickler remembered (its memo keeps every object
   pickled alive, and would make the next pickle refer back to them); a
   pickler that cannot forget is not kept. */
static void
qpickler_forget(qpickler *qp)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
#endif
    PyObject *r = qp->clear_memo ? PyObject_CallNoArgs(qp->clear_memo) : NULL;
    if (r == NULL) {
        PyErr_Clear();
        qpickler_drop(qp);
    }
    Py_XDECREF(r);
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(t, v, tb);
#endif
}

/* Pickle obj with the kept pickler, or with dumps() when none can be
   used.  A new reference, or NULL with an exception set. */
static PyObject *
qpickler_dumps(qpickler *qp, PyObject *dumps, PyObject *obj)
{
    if (qp == NULL || !qpickler_ready(qp)) {
        return PyObject_CallOneArg(dumps, obj);
    }
    qp->busy = 1;
    /* held here: a reducer could rebind the queue while it runs */
    PyObject *dump = Py_NewRef(qp->dump);
    SinkObject *sink = (SinkObject *)Py_NewRef(qp->sink);
    PyObject *r = PyObject_CallOneArg(dump, obj);
    PyObject *out = NULL;
    if (r != NULL) {
        Py_DECREF(r);
        out = qpickler_take_output(sink);
    }
    else {
        /* what a failed dump wrote is of no use; nor, to be safe, is the
           pickler itself */
        (void)PyList_SetSlice(sink->chunks, 0, PyList_GET_SIZE(sink->chunks),
                              NULL);
    }
    Py_DECREF(sink);
    if (qp->dump == dump) {
        qpickler_forget(qp);
        if (out == NULL) {
            qpickler_drop(qp);
        }
        qp->busy = 0;
    }
    Py_DECREF(dump);
    return out;
}

/* Fill f for obj: directly, through pickle.dumps() for plain containers,
   or through the queue's pickler (ForkingPickler: a kept one, or dumps()).
   -1 with an exception set when the object cannot be pickled. */
static int
frame_encode(cmp_state *st, qpickler *qp, PyObject *dumps, PyObject *obj,
             qframe *f)
{
    memset(f, 0, sizeof(*f));
    if (encode_direct(obj, f)) {
        return 0;
    }
    Py_ssize_t budget = 64;
    PyObject *payload;
    if (is_plain(obj, 3, &budget)) {
        payload = PyObject_CallOneArg(st->PickleDumps, obj);
    }
    else {
        payload = qpickler_dumps(qp, dumps, obj);
    }
    if (payload == NULL) {
        return -1;
    }
    if (PyBytes_CheckExact(payload)) {
        f->data = PyBytes_AS_STRING(payload);
        f->ndata = PyBytes_GET_SIZE(payload);
    }
    else {
        if (PyObject_GetBuffer(payload, &f->view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(payload);
            return -1;
        }
        f->has_view = 1;
        f->data = f->view.buf;
        f->ndata = f->view.len;
    }
    f->owner = payload;
    frame_set_header(f, NULL, 0);
    return 0;
}

/* The unwritten rest of f as up to 3 pieces; pre/post are copied into
   `scratch` (at least 29 bytes) because f may move. */
static int
frame_pieces(const qframe *f, cmp_qpipe_piece *out, unsigned char *scratch)
{
    int n = 0;
    Py_ssize_t skip = f->done;
    if (skip < f->npre) {
        memcpy(scratch, f->pre + skip, (size_t)(f->npre - skip));
        out[n].base = scratch;
        out[n].len = (size_t)(f->npre - skip);
        n++;
        skip = 0;
    }
    else {
        skip -= f->npre;
    }
    if (skip < f->ndata) {
        out[n].base = f->data + skip;
        out[n].len = (size_t)(f->ndata - skip);
        n++;
        skip = 0;
    }
    else {
        skip -= f->ndata;
    }
    if (skip < f->npost) {
        scratch[28] = f->post[0];
        out[n].base = scratch + 28;
        out[n].len = 1;
        n++;
    }
    return n;
}

/* The object an exactly-recognised direct encoding stands for; NULL
   without an exception when the payload is something else. */
static PyObject *
decode_direct(const unsigned char *p, Py_ssize_t n)
{
    if (n < 4 || p[0] != OP_PROTO || p[1] != DIRECT_PROTO ||
        p[n - 1] != OP_STOP) {
        return NULL;
    }
    unsigned char op = p[2];
    const unsigned char *a = p + 3;
    switch (op) {
    case OP_NONE:
        return n == 4 ? Py_NewRef(Py_None) : NULL;
    case OP_TRUE:
        return n == 4 ? Py_NewRef(Py_True) : NULL;
    case OP_FALSE:
        return n == 4 ? Py_NewRef(Py_False) : NULL;
    case OP_BININT1:
        return n == 5 ? PyLong_FromLong(a[0]) : NULL;
    case OP_BININT2:
        return n == 6 ? PyLong_FromLong((long)get_le(a, 2)) : NULL;
    case OP_BININT:
        return n == 8 ? PyLong_FromLong((long)(int32_t)(uint32_t)get_le(a, 4))
                      : NULL;
    case OP_BINFLOAT: {
        if (n != 12) {
            return NULL;
        }
        double d = PyFloat_Unpack8((const char *)a, 0);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        return PyFloat_FromDouble(d);
    }
    case OP_SHORT_BYTES:
    case OP_SHORT_STR:
    case OP_BINBYTES:
    case OP_BINSTR: {
        int wide = op == OP_BINBYTES || op == OP_BINSTR;
        Py_ssize_t len = (Py_ssize_t)get_le(a, wide ? 4 : 1);
        Py_ssize_t at = 3 + (wide ? 4 : 1);
        if (at + len + 1 != n) {
            return NULL;
        }
        if (op == OP_SHORT_BYTES || op == OP_BINBYTES) {
            return PyBytes_FromStringAndSize((const char *)p + at, len);
        }
        PyObject *s = PyUnicode_DecodeUTF8((const char *)p + at, len, NULL);
        if (s == NULL) {
            PyErr_Clear(); /* let pickle report it */
        }
        return s;
    }
    default:
        return NULL;
    }
}

/* ------------------------------------------------------------------ */
/* Calls into the lock objects                                         */

/* Call a bound acquire(block[, timeout]); 1 acquired, 0 not, -1 error. */
static int
call_acquire(PyObject *acquire, int block, PyObject *timeout)
{
    PyObject *args[3] = {NULL, block ? Py_True : Py_False, timeout};
    size_t nargs = timeout != NULL && timeout != Py_None ? 2 : 1;
    if (block && nargs == 1) {
        nargs = 0; /* plain blocking acquire() */
    }
    PyObject *r = PyObject_Vectorcall(acquire, args + 1,
                                      nargs | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      NULL);
    if (r == NULL) {
        return -1;
    }
    int ok = r == Py_True ? 1 : r == Py_False ? 0 : PyObject_IsTrue(r);
    Py_DECREF(r);
    return ok;
}

static int
call_release(PyObject *release)
{
    PyObject *r = PyObject_CallNoArgs(release);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Release with an exception pending: keep the first exception. */
static void
release_keeping_error(PyObject *release)
{
    if (release == NULL) {
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
    if (call_release(release) < 0) {
        PyErr_WriteUnraisable(release);
    }
    PyErr_SetRaisedException(exc);
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (call_release(release) < 0) {
        PyErr_WriteUnraisable(release);
    }
    PyErr_Restore(t, v, tb);
#endif
}

/* The handle behind a Connection: call its bound fileno() (a closed
   Connection raises, as the stdlib's does). */
static int
conn_handle(PyObject *fileno, cmp_handle_t *out)
{
    PyObject *r = PyObject_CallNoArgs(fileno);
    if (r == NULL) {
        return -1;
    }
    long long v = PyLong_AsLongLong(r);
    Py_DECREF(r);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = CMP_QPIPE_HANDLE(v);
    return 0;
}

/* ------------------------------------------------------------------ */
/* QueueFeed                                                           */

typedef struct {
    PyObject_HEAD
    qframe *ring;        /* circular, `cap` slots, `count` used from `first` */
    Py_ssize_t cap, first, count;
    PyObject *writer;    /* Connection */
    PyObject *w_fileno;  /* its bound fileno */
    PyObject *wl_acquire, *wl_release; /* NULL: no writer lock */
    PyObject *send_bytes; /* not NULL: write through the Connection */
    PyObject *failed_obj; /* object of the frame the last error dropped */
    PyThread_type_lock wake;
    /* Hand-over of the GIL from a thread that puts to the feeder: the
       feeder sets wants_gil (without the GIL) when a write is done and it
       waits for the GIL; a put() that sees it lets go of the GIL and waits
       on `handover` (held = nothing to report) until the feeder, with the
       GIL, releases it -- instead of the feeder waiting out the switch
       interval (5 ms) while the reader runs dry.  handover_waiting is only
       touched with the GIL held. */
    PyThread_type_lock handover;
    volatile int wants_gil;
    int handover_waiting;
    unsigned char *stage; /* FEED_STAGE_BYTES for one write, or NULL */
    int sleeping, wake_posted, stop, started, writing;
    int used; /* put() was called with this feed */
} FeedObject;

static qframe *
feed_at(FeedObject *fd, Py_ssize_t i)
{
    return &fd->ring[(fd->first + i) % fd->cap];
}

static int
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
    frame_clear(f);
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
    Py_VISIT(fd->w_fileno);
    Py_VISIT(fd->wl_acquire);
    Py_VISIT(fd->wl_release);
    Py_VISIT(fd->send_bytes);
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
    Py_CLEAR(fd->w_fileno);
    Py_CLEAR(fd->wl_acquire);
    Py_CLEAR(fd->wl_release);
    Py_CLEAR(fd->send_bytes);
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
static void
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
        release_keeping_error(fd->wl_release);
    }
    Py_XSETREF(fd->failed_obj, Py_XNewRef(f->obj));
    feed_pop(fd);
}

/* The frame's body (what Connection.send_bytes frames itself). */
static PyObject *
frame_payload(const qframe *f)
{
    int h = f->pre[0] == 0xff ? 12 : 4;
    Py_ssize_t body = frame_total(f) - h;
    PyObject *payload = PyBytes_FromStringAndSize(NULL, body);
    if (payload == NULL) {
        return NULL;
    }
    char *p = PyBytes_AS_STRING(payload);
    memcpy(p, f->pre + h, (size_t)(f->npre - h));
    p += f->npre - h;
    if (f->ndata > 0) {
        memcpy(p, f->data, (size_t)f->ndata);
        p += f->ndata;
    }
    if (f->npost) {
        *p = (char)f->post[0];
    }
    return payload;
}

/* Send a frame through Connection.send_bytes (platforms whose pipes do
   not carry this framing); the caller holds the writer lock if any. */
static int
send_through(PyObject *send_bytes, const qframe *f)
{
    PyObject *payload = frame_payload(f);
    if (payload == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(send_bytes, payload);
    Py_DECREF(payload);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Take the writer lock for the head frame unless it already holds it
   (a put that wrote part of it left the lock held).  The head is marked
   as holding it. */
static int
feed_lock_head(FeedObject *fd)
{
    if (feed_at(fd, 0)->holds_wlock || fd->wl_acquire == NULL) {
        return 0;
    }
    int got = call_acquire(fd->wl_acquire, 1, NULL);
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
    if (conn_handle(fd->w_fileno, &h) < 0) {
        feed_fail_head(fd);
        return -1;
    }
    cmp_qpipe_piece pieces[CMP_QPIPE_MAX_PIECES];
    int npieces = 0;
    size_t staged = 0;
    Py_ssize_t nframes = 0, bytes = 0;
    while (nframes < fd->count && npieces + 3 <= CMP_QPIPE_MAX_PIECES &&
           bytes < FEED_BATCH_BYTES &&
           staged + FEED_COALESCE + 29 <= FEED_STAGE_BYTES) {
        qframe *f = feed_at(fd, nframes);
        cmp_qpipe_piece own[3];
        unsigned char scratch[29];
        int n = frame_pieces(f, own, scratch);
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
            cmp_qpipe_piece *last = npieces > 0 ? &pieces[npieces - 1] : NULL;
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
        bytes += frame_total(f) - f->done;
        nframes++;
    }
    size_t total = 0;
    int err = 0;
    fd->writing = 1;
    Py_BEGIN_ALLOW_THREADS
    int i = 0;
    while (i < npieces) {
        size_t done = 0;
        int r = cmp_qpipe_write_wait(h, pieces + i, npieces - i, &done);
        if (r == CMP_QPIPE_INTR) {
            continue; /* not the main thread: no handlers to run here */
        }
        if (r != CMP_QPIPE_OK) {
            err = r;
            break;
        }
        total += done;
        while (i < npieces && done >= pieces[i].len) {
            done -= pieces[i].len;
            i++;
        }
        if (i < npieces) {
            pieces[i].base = (const char *)pieces[i].base + done;
            pieces[i].len -= done;
        }
    }
    fd->wants_gil = 1;
    Py_END_ALLOW_THREADS
    fd->wants_gil = 0;
    feed_handed_over(fd);
    fd->writing = 0;
    /* the lock was held for the whole batch: it belongs to no frame now */
    feed_at(fd, 0)->holds_wlock = 0;
    while (fd->count > 0) {
        qframe *f = feed_at(fd, 0);
        size_t rest = (size_t)(frame_total(f) - f->done);
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
        release_keeping_error(fd->wl_release);
        if (fd->count > 0) {
            feed_fail_head(fd);
        }
        return -1;
    }
    if (fd->wl_release != NULL && call_release(fd->wl_release) < 0) {
        return -1;
    }
    return 0;
}

/* Delegate mode: one frame through the writer's send_bytes. */
static int
feed_send_head(FeedObject *fd)
{
    if (feed_lock_head(fd) < 0) {
        return -1;
    }
    int rc = send_through(fd->send_bytes, feed_at(fd, 0));
    feed_at(fd, 0)->holds_wlock = 0;
    if (rc < 0) {
        release_keeping_error(fd->wl_release);
        feed_fail_head(fd);
        return -1;
    }
    feed_pop(fd);
    if (fd->wl_release != NULL && call_release(fd->wl_release) < 0) {
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
        int r = fd->send_bytes != NULL ? feed_send_head(fd)
                                       : feed_write_batch(fd);
        if (r < 0) {
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

static PyMethodDef feed_methods[] = {
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

/* ------------------------------------------------------------------ */
/* QueueBase                                                           */

typedef struct {
    PyObject_HEAD
    cmp_state *st;
    FeedObject *feed;
    PyObject *reader;    /* Connection */
    PyObject *r_fileno;  /* its bound fileno */
    PyObject *rl_acquire, *rl_release;
    PyObject *sem_acquire, *sem_release; /* NULL: no size semaphore */
    PyObject *dumps, *loads;
    PyObject *recv_bytes, *poll; /* set: read through the Connection */
    qpickler pk;
    int closed, ignore_epipe;
    int pipe_grown; /* this process asked for the larger pipe buffer */
    size_t pipe_growth; /* what it counts against pipe_growth_held */
    cmp_spin spin; /* before sleeping for the next message (spin.h) */
} QueueObject;

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
    Py_VISIT(q->r_fileno);
    Py_VISIT(q->rl_acquire);
    Py_VISIT(q->rl_release);
    Py_VISIT(q->sem_acquire);
    Py_VISIT(q->sem_release);
    Py_VISIT(q->dumps);
    Py_VISIT(q->loads);
    Py_VISIT(q->recv_bytes);
    Py_VISIT(q->poll);
    return qpickler_traverse(&q->pk, visit, arg);
}

static int
queue_clear(PyObject *op)
{
    QueueObject *q = (QueueObject *)op;
    Py_CLEAR(q->feed);
    Py_CLEAR(q->reader);
    Py_CLEAR(q->r_fileno);
    Py_CLEAR(q->rl_acquire);
    Py_CLEAR(q->rl_release);
    Py_CLEAR(q->sem_acquire);
    Py_CLEAR(q->sem_release);
    Py_CLEAR(q->dumps);
    Py_CLEAR(q->loads);
    Py_CLEAR(q->recv_bytes);
    Py_CLEAR(q->poll);
    qpickler_clear(&q->pk);
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

/* Small keyword-aware parser: names[i] for each slot; missing ones stay
   as given by the caller (defaults). */
static int
parse_args(const char *fname, const char *const *names, Py_ssize_t n,
           PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           PyObject **out)
{
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %zd positional arguments (%zd given)",
                     fname, n, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(key, names[i]) != 0) {
            i++;
        }
        if (i == n) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         fname, key);
            return -1;
        }
        if (i < nargs) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'", fname,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
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
        if (q->sem_release != NULL) {
            release_keeping_error(q->sem_release);
        }
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *t, *exc, *tb;
    PyErr_Fetch(&t, &exc, &tb);
    PyErr_NormalizeException(&t, &exc, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(exc, tb);
    }
    Py_XDECREF(t);
    Py_XDECREF(tb);
#endif
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
    if (q->pipe_grown || frame_total(f) < QUEUE_GROW_AT ||
        fd->send_bytes != NULL) {
        return;
    }
    q->pipe_grown = 1;
    cmp_handle_t h;
    if (conn_handle(fd->w_fileno, &h) < 0) {
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
    size_t now = cmp_qpipe_grow(h, QUEUE_PIPE_WANT);
    cmp_process_lock();
    pipe_growth_held -= QUEUE_PIPE_WANT;
    if (now > ((size_t)64 << 10)) {
        q->pipe_growth = now;
        pipe_growth_held += now;
    }
    cmp_process_unlock();
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
    if (fd->count == 0 && fd->send_bytes == NULL) {
        int locked = 1;
        if (fd->wl_acquire != NULL) {
            locked = call_acquire(fd->wl_acquire, 0, NULL);
            if (locked < 0) {
                goto fail_release_sem;
            }
        }
        if (locked && fd->count != 0) {
            /* another thread queued frames while we took the lock */
            if (fd->wl_release != NULL && call_release(fd->wl_release) < 0) {
                goto fail_release_sem;
            }
            locked = 0;
        }
        if (locked) {
            cmp_handle_t h;
            size_t done = 0;
            cmp_qpipe_piece pieces[3];
            unsigned char scratch[29];
            int rc = 0;
            if (conn_handle(fd->w_fileno, &h) < 0) {
                rc = -1;
            }
            else {
                int np = frame_pieces(f, pieces, scratch);
                int err = cmp_qpipe_write_nowait(h, pieces, np, &done);
                if (err == CMP_QPIPE_INTR) {
                    done = 0;
                }
                else if (err != CMP_QPIPE_OK) {
                    cmp_raise_oserror(err);
                    rc = -1;
                }
            }
            if (rc < 0 || done == 0 ||
                (Py_ssize_t)done == frame_total(f)) {
                if (fd->wl_release != NULL) {
                    if (rc < 0) {
                        release_keeping_error(fd->wl_release);
                    }
                    else if (call_release(fd->wl_release) < 0) {
                        goto fail_release_sem;
                    }
                }
                if (rc < 0) {
                    frame_clear(f);
                    return report_send_error(q, obj);
                }
                if (done > 0) {
                    frame_clear(f);
                    Py_RETURN_NONE;
                }
            }
            else {
                /* part of a long frame went in: the feeder finishes it
                   and releases the writer lock */
                f->done = (Py_ssize_t)done;
                f->holds_wlock = fd->wl_acquire != NULL;
            }
        }
    }
    f->obj = Py_NewRef(obj);
    if (feed_push(fd, f) < 0) {
        frame_clear(f);
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
    frame_clear(f);
    if (q->sem_release != NULL) {
        release_keeping_error(q->sem_release);
    }
    return NULL;
}

/* put() after the size-semaphore unit is held. */
static PyObject *
put_acquired(QueueObject *q, PyObject *obj)
{
    qframe f;
    if (frame_encode(q->st, &q->pk, q->dumps, obj, &f) < 0) {
        frame_clear(&f);
        return report_send_error(q, obj);
    }
    return send_frame(q, obj, &f);
}

/* The checks of put() before anything is written: the queue is open and
   a unit of the size semaphore is taken (queue.Full when none came in
   time).  0 or -1. */
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
    if (q->sem_acquire == NULL) {
        return 0;
    }
    int block = PyObject_IsTrue(block_obj);
    if (block < 0) {
        return -1;
    }
    int got = call_acquire(q->sem_acquire, block, timeout);
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
    QueueObject *q = (QueueObject *)op;
    PyObject *a[3] = {NULL, Py_True, Py_None};
    if (parse_args("put", names, 3, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (a[0] == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "put() missing required argument 'obj'");
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
    PyObject *a[2] = {Py_True, Py_None};
    if (parse_args("_reserve", names, 2, args, nargs, kwnames, a) < 0 ||
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

/* One read without blocking into the slots (the plain call for one). */
static int
read_some(cmp_handle_t h, cmp_qpipe_slot *slots, int count, size_t *done)
{
    if (count == 1) {
        return cmp_qpipe_read_nowait(h, slots[0].base, slots[0].len, done);
    }
    return cmp_qpipe_readv_nowait(h, slots, count, done);
}

/* Fill the slots completely, in order, waiting (GIL released, in slices)
   as needed; each attempt is one scattered read of everything still
   missing.  `started` says whether part of the frame was already read
   (for the end-of-file error).  The slots array is consumed. */
/* A spinning wait's check: does the pipe hold something to read? */
static int
qpipe_check_readable(void *arg, int *ready)
{
    int r = cmp_qpipe_wait(*(cmp_handle_t *)arg, 0, 0.0);
    *ready = r == CMP_QPIPE_OK;
    return (r == CMP_QPIPE_OK || r == CMP_QPIPE_AGAIN || r == CMP_QPIPE_INTR)
           ? 0 : r;
}

static int
read_slots(cmp_handle_t h, cmp_qpipe_slot *slots, int count, int started,
           cmp_spin *spin)
{
    int i = 0;
    while (i < count && slots[i].len == 0) {
        i++;
    }
    while (i < count) {
        size_t d = 0;
        int r = read_some(h, slots + i, count - i, &d);
        if (r == CMP_QPIPE_AGAIN) {
            /* The wait for a frame's start spins first (spin.h). */
            const double budget = spin != NULL ? cmp_spin_budget(spin) : 0.0;
            int caught = 0;
            Py_BEGIN_ALLOW_THREADS
            if (budget > 0.0 &&
                cmp_spin_until(budget, qpipe_check_readable, (void *)&h,
                               &caught) == 0 && caught) {
                r = CMP_QPIPE_OK;
            }
            else {
                r = cmp_qpipe_wait(h, 0, CMP_WAIT_SLICE);
            }
            if (r == CMP_QPIPE_OK) {
                r = read_some(h, slots + i, count - i, &d);
            }
            Py_END_ALLOW_THREADS
            if (budget > 0.0) {
                cmp_spin_result(spin, budget, caught);
                spin = NULL;
            }
            if (r == CMP_QPIPE_AGAIN || r == CMP_QPIPE_INTR) {
                if (PyErr_CheckSignals() < 0) {
                    return -1;
                }
                continue;
            }
        }
        if (r == CMP_QPIPE_OK) {
            started = 1;
            while (i < count && d >= slots[i].len) {
                d -= slots[i].len;
                i++;
            }
            if (i < count) {
                slots[i].base = (char *)slots[i].base + d;
                slots[i].len -= d;
            }
            continue;
        }
        if (r == CMP_QPIPE_INTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        if (r == CMP_QPIPE_EOF) {
            if (started) {
                PyErr_SetString(PyExc_OSError,
                                "got end of file during message");
            }
            else {
                PyErr_SetNone(PyExc_EOFError);
            }
            return -1;
        }
        cmp_raise_oserror(r);
        return -1;
    }
    return 0;
}

/* Read exactly n bytes into buf (see read_slots). */
static int
read_exact(cmp_handle_t h, char *buf, size_t n, int started, cmp_spin *spin)
{
    cmp_qpipe_slot one;
    one.base = buf;
    one.len = n;
    return read_slots(h, &one, 1, started, spin);
}

/* The body of a long frame (len >= QUEUE_DIRECT_READ), read with one
   scattered read where the pipe holds it all: the 7 bytes a long bytes
   or str pickle starts with, the rest but the last byte straight into a
   new bytes object, and the last byte.  A bytes payload is then that very
   object and a str is decoded from it; anything else is reassembled for
   pickle (*payload_out). */
static PyObject *
read_long_body(cmp_handle_t h, Py_ssize_t len, PyObject **payload_out)
{
    unsigned char pre[7];
    char stop;
    PyObject *b = PyBytes_FromStringAndSize(NULL, len - 8);
    if (b == NULL) {
        return NULL;
    }
    cmp_qpipe_slot slots[3] = {
        {pre, 7}, {PyBytes_AS_STRING(b), (size_t)(len - 8)}, {&stop, 1}};
    if (read_slots(h, slots, 3, 1, NULL) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    if (pre[0] == OP_PROTO && pre[1] == DIRECT_PROTO &&
        (unsigned char)stop == OP_STOP &&
        (Py_ssize_t)get_le(pre + 3, 4) == len - 8) {
        if (pre[2] == OP_BINBYTES) {
            return b;
        }
        if (pre[2] == OP_BINSTR) {
            PyObject *s = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(b), len - 8,
                                               NULL);
            if (s != NULL) {
                Py_DECREF(b);
                return s;
            }
            PyErr_Clear(); /* let pickle report it */
        }
    }
    PyObject *payload = PyBytes_FromStringAndSize(NULL, len);
    if (payload != NULL) {
        char *p = PyBytes_AS_STRING(payload);
        memcpy(p, pre, 7);
        memcpy(p + 7, PyBytes_AS_STRING(b), (size_t)(len - 8));
        p[len - 1] = stop;
    }
    Py_DECREF(b);
    *payload_out = payload;
    return NULL;
}

/* Read one frame and turn it into the object. */
static PyObject *
read_object(cmp_handle_t h, PyObject **payload_out, cmp_spin *spin)
{
    unsigned char hdr[8];
    *payload_out = NULL;
    if (read_exact(h, (char *)hdr, 4, 0, spin) < 0) {
        return NULL;
    }
    int32_t n32 = (int32_t)(((uint32_t)hdr[0] << 24) |
                            ((uint32_t)hdr[1] << 16) |
                            ((uint32_t)hdr[2] << 8) | hdr[3]);
    uint64_t n;
    if (n32 == -1) {
        if (read_exact(h, (char *)hdr, 8, 1, NULL) < 0) {
            return NULL;
        }
        n = 0;
        for (int i = 0; i < 8; i++) {
            n = (n << 8) | hdr[i];
        }
    }
    else if (n32 < 0) {
        PyErr_Format(PyExc_OSError, "bad message length %d in queue pipe",
                     (int)n32);
        return NULL;
    }
    else {
        n = (uint64_t)n32;
    }
    if (n > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "message too long");
        return NULL;
    }
    Py_ssize_t len = (Py_ssize_t)n;
    unsigned char small[256];
    if (len <= (Py_ssize_t)sizeof(small)) {
        if (read_exact(h, (char *)small, (size_t)len, 1, NULL) < 0) {
            return NULL;
        }
        PyObject *obj = decode_direct(small, len);
        if (obj != NULL) {
            return obj;
        }
        *payload_out = PyBytes_FromStringAndSize((char *)small, len);
        return NULL;
    }
    if (len >= QUEUE_DIRECT_READ) {
        return read_long_body(h, len, payload_out);
    }
    PyObject *payload = PyBytes_FromStringAndSize(NULL, len);
    if (payload == NULL) {
        return NULL;
    }
    if (read_exact(h, PyBytes_AS_STRING(payload), (size_t)len, 1, NULL) < 0) {
        Py_DECREF(payload);
        return NULL;
    }
    PyObject *obj = decode_direct((unsigned char *)PyBytes_AS_STRING(payload),
                                  len);
    if (obj != NULL) {
        Py_DECREF(payload);
        return obj;
    }
    *payload_out = payload;
    return NULL;
}

/* Read one message while holding the reader lock.  Returns the object,
   or NULL with *payload set when it still needs unpickling (done by the
   caller after the lock is released), or NULL with an exception. */
static PyObject *
receive_locked(QueueObject *q, PyObject **payload)
{
    *payload = NULL;
    if (q->recv_bytes != NULL) {
        *payload = PyObject_CallNoArgs(q->recv_bytes);
        return NULL;
    }
    cmp_handle_t h;
    if (conn_handle(q->r_fileno, &h) < 0) {
        return NULL;
    }
    return read_object(h, payload, &q->spin);
}

/* Wait until the reader is readable or the deadline passes: 1 / 0 / -1. */
static int
wait_readable(QueueObject *q, int block, double deadline)
{
    if (q->poll != NULL) {
        double left = block ? deadline - cmp_monotonic() : 0.0;
        PyObject *t = PyFloat_FromDouble(left > 0.0 ? left : 0.0);
        if (t == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallOneArg(q->poll, t);
        Py_DECREF(t);
        if (r == NULL) {
            return -1;
        }
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        return ok;
    }
    cmp_handle_t h;
    if (conn_handle(q->r_fileno, &h) < 0) {
        return -1;
    }
    int r = cmp_qpipe_wait(h, 0, 0.0);
    while (block && r != CMP_QPIPE_OK) {
        if (r == CMP_QPIPE_INTR || r == CMP_QPIPE_AGAIN) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
        }
        else {
            cmp_raise_oserror(r);
            return -1;
        }
        double left = deadline - cmp_monotonic();
        if (left <= 0.0) {
            break;
        }
        if (left > CMP_WAIT_SLICE) {
            left = CMP_WAIT_SLICE;
        }
        Py_BEGIN_ALLOW_THREADS
        r = cmp_qpipe_wait(h, 0, left);
        Py_END_ALLOW_THREADS
    }
    if (r == CMP_QPIPE_OK) {
        return 1;
    }
    if (r == CMP_QPIPE_AGAIN || r == CMP_QPIPE_INTR) {
        return 0;
    }
    cmp_raise_oserror(r);
    return -1;
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

static PyObject *
queue_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    QueueObject *q = (QueueObject *)op;
    PyObject *a[2] = {Py_True, Py_None};
    if (parse_args("get", names, 2, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (q->closed) {
        return closed_error(q);
    }
    if (queue_ready(q) < 0) {
        return NULL;
    }
    int block = PyObject_IsTrue(a[0]);
    if (block < 0) {
        return NULL;
    }
    PyObject *obj, *payload;
    if (block && a[1] == Py_None) {
        if (call_acquire(q->rl_acquire, 1, NULL) < 0) {
            return NULL;
        }
        obj = receive_locked(q, &payload);
        if (obj == NULL && payload == NULL) {
            release_keeping_error(q->rl_release);
            return NULL;
        }
    }
    else {
        double deadline = 0.0;
        if (block) {
            int has;
            double secs;
            if (cmp_parse_timeout(a[1], &has, &secs) < 0) {
                return NULL;
            }
            deadline = cmp_monotonic() + secs;
        }
        int got = call_acquire(q->rl_acquire, block, block ? a[1] : NULL);
        if (got <= 0) {
            if (got == 0) {
                raise_queue_exception(q->st, 0);
            }
            return NULL;
        }
        int ready = wait_readable(q, block, deadline);
        if (ready <= 0) {
            if (ready == 0) {
                raise_queue_exception(q->st, 0);
            }
            release_keeping_error(q->rl_release);
            return NULL;
        }
        obj = receive_locked(q, &payload);
        if (obj == NULL && payload == NULL) {
            release_keeping_error(q->rl_release);
            return NULL;
        }
    }
    if (call_release(q->rl_release) < 0 ||
        (q->sem_release != NULL && call_release(q->sem_release) < 0)) {
        Py_XDECREF(obj);
        Py_XDECREF(payload);
        return NULL;
    }
    return finish_get(q, obj, payload);
}

/* ---- SimpleQueue ---- */

/* Write the whole frame, waiting as long as it takes (the caller holds
   the writer lock).  The first attempt keeps the GIL. */
static int
write_all(cmp_handle_t h, qframe *f)
{
    for (;;) {
        cmp_qpipe_piece pieces[3];
        unsigned char scratch[29];
        int np = frame_pieces(f, pieces, scratch);
        size_t done = 0;
        int r = cmp_qpipe_write_nowait(h, pieces, np, &done);
        if (r == CMP_QPIPE_OK) {
            f->done += (Py_ssize_t)done;
            if (f->done == frame_total(f)) {
                return 0;
            }
            if (done > 0) {
                continue;
            }
            Py_BEGIN_ALLOW_THREADS
            r = cmp_qpipe_wait(h, 1, CMP_WAIT_SLICE);
            Py_END_ALLOW_THREADS
            if (r == CMP_QPIPE_OK) {
                continue;
            }
        }
        if (r == CMP_QPIPE_AGAIN || r == CMP_QPIPE_INTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        cmp_raise_oserror(r);
        return -1;
    }
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
    if (frame_encode(q->st, &q->pk, q->dumps, obj, &f) < 0) {
        frame_clear(&f);
        return NULL;
    }
    grow_pipe_for(q, &f);
    if (fd->wl_acquire != NULL && call_acquire(fd->wl_acquire, 1, NULL) < 0) {
        frame_clear(&f);
        return NULL;
    }
    int rc;
    if (fd->send_bytes != NULL) {
        rc = send_through(fd->send_bytes, &f);
    }
    else {
        cmp_handle_t h;
        rc = conn_handle(fd->w_fileno, &h);
        if (rc == 0) {
            rc = write_all(h, &f);
        }
    }
    frame_clear(&f);
    if (fd->wl_release != NULL) {
        if (rc < 0) {
            release_keeping_error(fd->wl_release);
        }
        else if (call_release(fd->wl_release) < 0) {
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
    if (call_acquire(q->rl_acquire, 1, NULL) < 0) {
        return NULL;
    }
    PyObject *payload;
    PyObject *obj = receive_locked(q, &payload);
    if (obj == NULL && payload == NULL) {
        release_keeping_error(q->rl_release);
        return NULL;
    }
    if (call_release(q->rl_release) < 0) {
        Py_XDECREF(obj);
        Py_XDECREF(payload);
        return NULL;
    }
    return finish_get(q, obj, payload);
}

/* ---- set-up ---- */

static int
bound_pair(PyObject *lock, PyObject **acquire, PyObject **release)
{
    *acquire = *release = NULL;
    if (lock == Py_None) {
        return 0;
    }
    *acquire = PyObject_GetAttrString(lock, "acquire");
    if (*acquire == NULL) {
        return -1;
    }
    *release = PyObject_GetAttrString(lock, "release");
    if (*release == NULL) {
        Py_CLEAR(*acquire);
        return -1;
    }
    return 0;
}

/* _bind(reader, writer, rlock, wlock, sem, dumps, loads, framed):
   (re)connect the native part to the queue's pipe, locks and pickler.
   rlock/wlock/sem: objects with acquire/release (wlock and sem may be
   None).  framed=False reads and writes through the Connections' own
   methods instead of the pipe's handles.  Starts a fresh feed: frames of
   an earlier one (e.g. the parent's, after fork) are dropped. */
static PyObject *
queue_bind(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    QueueObject *q = (QueueObject *)op;
    if (nargs != 8 && nargs != 9) {
        PyErr_Format(PyExc_TypeError,
                     "_bind() takes 8 or 9 arguments (%zd given)", nargs);
        return NULL;
    }
    int framed = PyObject_IsTrue(args[7]);
    if (framed < 0) {
        return NULL;
    }
    if (!PyCallable_Check(args[5]) || !PyCallable_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "_bind(): dumps/loads not callable");
        return NULL;
    }
    if (args[2] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "_bind(): a reader lock is needed");
        return NULL;
    }
    PyObject *pickler_cls = nargs == 9 ? args[8] : Py_None;
    if (pickler_cls != Py_None && !PyType_Check(pickler_cls)) {
        PyErr_SetString(PyExc_TypeError,
                        "_bind(): the pickler must be a class or None");
        return NULL;
    }
    FeedObject *fd = (FeedObject *)PyObject_CallNoArgs(
        q->st->QueueFeed_type);
    if (fd == NULL) {
        return NULL;
    }
    PyObject *rl_a, *rl_r, *sem_a, *sem_r;
    if (bound_pair(args[2], &rl_a, &rl_r) < 0) {
        goto error;
    }
    if (bound_pair(args[4], &sem_a, &sem_r) < 0) {
        Py_DECREF(rl_a);
        Py_DECREF(rl_r);
        goto error;
    }
    if (bound_pair(args[3], &fd->wl_acquire, &fd->wl_release) < 0) {
        Py_DECREF(rl_a);
        Py_DECREF(rl_r);
        Py_XDECREF(sem_a);
        Py_XDECREF(sem_r);
        goto error;
    }
    fd->writer = Py_NewRef(args[1]);
    fd->w_fileno = PyObject_GetAttrString(args[1], "fileno");
    PyObject *r_fileno = PyObject_GetAttrString(args[0], "fileno");
    if (fd->w_fileno == NULL || r_fileno == NULL) {
        Py_XDECREF(r_fileno);
        Py_DECREF(rl_a);
        Py_DECREF(rl_r);
        Py_XDECREF(sem_a);
        Py_XDECREF(sem_r);
        goto error;
    }
    PyObject *recv_bytes = NULL, *poll = NULL;
    if (!framed) {
        fd->send_bytes = PyObject_GetAttrString(args[1], "send_bytes");
        recv_bytes = PyObject_GetAttrString(args[0], "recv_bytes");
        poll = PyObject_GetAttrString(args[0], "poll");
        if (fd->send_bytes == NULL || recv_bytes == NULL || poll == NULL) {
            Py_XDECREF(recv_bytes);
            Py_XDECREF(poll);
            Py_DECREF(r_fileno);
            Py_DECREF(rl_a);
            Py_DECREF(rl_r);
            Py_XDECREF(sem_a);
            Py_XDECREF(sem_r);
            goto error;
        }
    }
    Py_XSETREF(q->feed, fd);
    Py_XSETREF(q->reader, Py_NewRef(args[0]));
    Py_XSETREF(q->r_fileno, r_fileno);
    Py_XSETREF(q->rl_acquire, rl_a);
    Py_XSETREF(q->rl_release, rl_r);
    Py_XSETREF(q->sem_acquire, sem_a);
    Py_XSETREF(q->sem_release, sem_r);
    Py_XSETREF(q->dumps, Py_NewRef(args[5]));
    Py_XSETREF(q->loads, Py_NewRef(args[6]));
    Py_XSETREF(q->recv_bytes, recv_bytes);
    Py_XSETREF(q->poll, poll);
    /* a fresh kept pickler too (a forked child must not find the parent's
       marked busy) */
    if (qpickler_set_class(q->st, &q->pk, pickler_cls) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;

error:
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
     "put() for a caller that already holds a unit of the size semaphore."},
    {"_simple_put", simple_put, METH_O,
     "SimpleQueue.put: encode, then write the whole frame under the "
     "writer lock."},
    {"_simple_get", simple_get, METH_NOARGS,
     "SimpleQueue.get: read one frame under the reader lock."},
    {"_bind", (PyCFunction)(void (*)(void))queue_bind, METH_FASTCALL,
     "_bind(reader, writer, rlock, wlock, sem, dumps, loads, framed"
     "[, pickler])\n\npickler: a class whose instances may be kept and "
     "reused in place of dumps() (ForkingPickler), or None."},
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
        PyObject *fullexc = empty ? PyObject_GetAttrString(mod, "Full")
                                  : NULL;
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
    st->QueueFeed_type = PyType_FromModuleAndSpec(module, &feed_spec, NULL);
    if (st->QueueFeed_type == NULL) {
        return -1;
    }
    st->QueueSink_type = PyType_FromModuleAndSpec(module, &sink_spec, NULL);
    if (st->QueueSink_type == NULL) {
        return -1;
    }
    st->Queue_type = PyType_FromModuleAndSpec(module, &queue_spec, NULL);
    if (st->Queue_type == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "QueueFeed", st->QueueFeed_type) < 0 ||
        PyModule_AddObjectRef(module, "QueueBase", st->Queue_type) < 0) {
        return -1;
    }
    return 0;
}
