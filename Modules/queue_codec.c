/*
 * queue_codec.c -- a queue message as it goes into the pipe and comes back
 * out (queue.h): the pickle of exact None/bool/int/float/bytes/str written
 * directly, plain containers through pickle.dumps(), everything else
 * through the queue's ForkingPickler; the frame header (frame.c); and the
 * read of one message, whose long bytes/str payloads land directly in
 * their final object.
 */
#include "queue.h"
#include "pickler.h"

#include <string.h>

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

Py_ssize_t
qframe_total(const qframe *f)
{
    return (Py_ssize_t)f->npre + f->ndata + (Py_ssize_t)f->npost;
}

void
qframe_clear(qframe *f)
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

/* Put the frame header (frame.c) for the body in front of the `nprefix`
   pickle bytes that follow it in f->pre. */
static void
frame_set_header(qframe *f, const unsigned char *prefix, int nprefix)
{
    Py_ssize_t body = nprefix + f->ndata + f->npost;
    size_t h = cmp_frame_header(f->pre, (uint64_t)body);
    if (nprefix > 0) {
        /* (prefix is NULL when there is none: memcpy must not see it) */
        memcpy(f->pre + h, prefix, (size_t)nprefix);
    }
    f->npre = (unsigned char)(h + (size_t)nprefix);
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

/* Fill f for obj: directly, through pickle.dumps() for plain containers,
   or through the queue's pickler (ForkingPickler: a kept one, or dumps()).
   -1 with an exception set when the object cannot be pickled. */
int
qframe_encode(cmp_state *st, PyObject *kept, PyObject *dumps, PyObject *obj,
              qframe *f)
{
    /* every field but the bytes of pre/post and the view, which are set
       before they are used (has_view says when the view is): a memset of
       the whole frame, 150 bytes, cost about 5 ns a put */
    f->npre = f->npost = 0;
    f->data = NULL;
    f->ndata = 0;
    f->owner = NULL;
    f->has_view = 0;
    f->holds_wlock = 0;
    f->obj = NULL;
    f->done = 0;
    if (encode_direct(obj, f)) {
        return 0;
    }
    Py_ssize_t budget = 64;
    PyObject *payload;
    if (is_plain(obj, 3, &budget)) {
        payload = PyObject_CallOneArg(st->PickleDumps, obj);
    }
    else {
        payload = cmp_pickler_dumps(kept, dumps, obj);
    }
    if (payload == NULL) {
        qframe_clear(f);
        return -1;
    }
    if (PyBytes_CheckExact(payload)) {
        f->data = PyBytes_AS_STRING(payload);
        f->ndata = PyBytes_GET_SIZE(payload);
    }
    else {
        if (PyObject_GetBuffer(payload, &f->view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(payload);
            qframe_clear(f);
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

int
qframe_pieces(const qframe *f, cmp_iobuf *out, unsigned char *scratch)
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

/* The object an exactly-recognised direct encoding stands for (a new
   reference; NULL with an exception set when it cannot be made), or
   NULL without an exception when the payload is something else: the
   caller tells the two apart with PyErr_Occurred() through
   decode_direct() below. */
static PyObject *
decode_direct_object(const unsigned char *p, Py_ssize_t n)
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
            PyErr_Clear(); /* let pickle report it */
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

/* 1 with *out (a new reference) when the payload is one of the direct
   encodings, 0 when it needs pickle, -1 with an exception set. */
static int
decode_direct(const unsigned char *p, Py_ssize_t n, PyObject **out)
{
    *out = decode_direct_object(p, n);
    if (*out != NULL) {
        return 1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* The body of a long frame (len >= QUEUE_DIRECT_READ), read with one
   scattered read where the pipe holds it all: the 7 bytes a long bytes
   or str pickle starts with, the rest but the last byte straight into a
   new bytes object, and the last byte.  A bytes payload is then that very
   object and a str is decoded from it; anything else is reassembled for
   pickle (*payload). */
static int
read_long_body(cmp_wire *w, Py_ssize_t len, PyObject **obj, PyObject **payload)
{
    unsigned char pre[7];
    char stop;
    PyObject *b = PyBytes_FromStringAndSize(NULL, len - 8);
    if (b == NULL) {
        return -1;
    }
    cmp_iobuf slots[3] = {
        {pre, 7}, {PyBytes_AS_STRING(b), (size_t)(len - 8)}, {&stop, 1}};
    if (cmp_wire_read(w, slots, 3, CMP_WIRE_STARTED) < 0) {
        Py_DECREF(b);
        return -1;
    }
    if (pre[0] == OP_PROTO && pre[1] == DIRECT_PROTO &&
        (unsigned char)stop == OP_STOP &&
        (Py_ssize_t)get_le(pre + 3, 4) == len - 8) {
        if (pre[2] == OP_BINBYTES) {
            *obj = b;
            return 0;
        }
        if (pre[2] == OP_BINSTR) {
            PyObject *s = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(b), len - 8,
                                               NULL);
            if (s != NULL) {
                Py_DECREF(b);
                *obj = s;
                return 0;
            }
            PyErr_Clear(); /* let pickle report it */
        }
    }
    PyObject *whole = PyBytes_FromStringAndSize(NULL, len);
    if (whole != NULL) {
        char *p = PyBytes_AS_STRING(whole);
        memcpy(p, pre, 7);
        memcpy(p + 7, PyBytes_AS_STRING(b), (size_t)(len - 8));
        p[len - 1] = stop;
    }
    Py_DECREF(b);
    *payload = whole;
    return whole == NULL ? -1 : 0;
}

/* A message of at most 256 bytes read into buf: decoded directly, or
   kept as a pickle for the caller (qcodec_read's results). */
static int
small_message(const unsigned char *buf, Py_ssize_t len, PyObject **obj,
              PyObject **payload)
{
    int r = decode_direct(buf, len, obj);
    if (r != 0) {
        return r > 0 ? 0 : -1;
    }
    *payload = PyBytes_FromStringAndSize((const char *)buf, len);
    return *payload == NULL ? -1 : 0;
}

int
qcodec_read(cmp_wire *w, PyObject **obj, PyObject **payload)
{
    *obj = *payload = NULL;
    unsigned char small[256];
    size_t whole;
    if (cmp_wire_take_whole(w, small, sizeof(small), &whole)) {
        return small_message(small, (Py_ssize_t)whole, obj, payload);
    }
    uint64_t n;
    int r = cmp_wire_read_header(w, CMP_WIRE_STARTED, &n);
    if (r < 0) {
        return -1;
    }
    if (r == CMP_FRAME_BAD) {
        PyErr_Format(PyExc_OSError, "bad message length %d in queue pipe",
                     (int)(int32_t)(uint32_t)n);
        return -1;
    }
    if (n > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "message too long");
        return -1;
    }
    Py_ssize_t len = (Py_ssize_t)n;
    /* (cmp_wire_read_header marked the message in w->left, for
       queue_robust.c: what a reader taking over would drop) */
    if (len <= (Py_ssize_t)sizeof(small)) {
        cmp_iobuf slot = {small, (size_t)len};
        if (cmp_wire_read(w, &slot, 1, CMP_WIRE_STARTED) < 0) {
            return -1;
        }
        return small_message(small, len, obj, payload);
    }
    if (len >= QUEUE_DIRECT_READ) {
        return read_long_body(w, len, obj, payload);
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, len);
    if (body == NULL) {
        return -1;
    }
    cmp_iobuf slot = {PyBytes_AS_STRING(body), (size_t)len};
    if (cmp_wire_read(w, &slot, 1, CMP_WIRE_STARTED) < 0) {
        Py_DECREF(body);
        return -1;
    }
    r = decode_direct((unsigned char *)PyBytes_AS_STRING(body), len, obj);
    if (r != 0) {
        Py_DECREF(body);
        return r > 0 ? 0 : -1;
    }
    *payload = body;
    return 0;
}
