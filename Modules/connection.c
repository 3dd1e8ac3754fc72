/*
 * connection.c -- the Connection type: length-framed messages over one
 * handle (a socket or a pipe end), poll(), and wait() over many handles.
 *
 * Wire format (the stdlib's): a 4-byte big-endian signed length, or -1
 * followed by an 8-byte big-endian unsigned length for payloads longer than
 * 2**31-1, then the payload.  A reader takes exactly the bytes of one frame,
 * never more, because several processes may share the reading end.
 *
 * Sending gathers header and payload into one writev/sendmsg; pickled
 * objects are written by the kept pickler (pickler.c) into its sink, whose
 * chunks become the pieces of that gathered write.  Receiving reads the
 * header, then the payload straight into a fresh bytes object (or the
 * caller's buffer for recv_bytes_into).  The framing, the reads and writes
 * and the waits are frame.c's, shared with the queues.
 */
#include "cmp.h"
#include "frame.h"
#include "pickler.h"

#include <string.h>

/* Payloads above this size are not allocated in one go before the first
   part of them has arrived: a peer has to prove it is really sending. */
#define CONN_PROBE_SIZE ((size_t)64 * 1024 * 1024)

/* Frames whose payload is at most this long are sent with one system call
   that carries the header too; longer ones as well (gathered), so there is
   no separate rule: header and payload always travel together. */

typedef struct {
    PyObject_HEAD
    cmp_handle_t fd;        /* CMP_INVALID_HANDLE once closed */
    int kind;               /* CMP_IO_KIND_*, found on first use */
    char readable;
    char writable;
    char waited;            /* the last message had to be waited for */
    cmp_spin spin;          /* before sleeping for a message (spin.h) */
    PyObject *dict;
    PyObject *weakrefs;
} ConnObject;

#define CONN_CLOSED(c) ((c)->fd == CMP_INVALID_HANDLE)

/* The wire of an open connection (after conn_check). */
static cmp_wire
conn_wire(ConnObject *self)
{
    cmp_wire w = {self->fd, self->kind, &self->spin, &self->waited,
                  NULL,     NULL,       NULL,        NULL};
    return w;
}

/* ------------------------------------------------------------------ */
/* State checks with the stdlib's messages.                            */

static int
conn_check(ConnObject *self, int want_read, int want_write)
{
    if (CONN_CLOSED(self)) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return -1;
    }
    if (want_read && !self->readable) {
        PyErr_SetString(PyExc_OSError, "connection is write-only");
        return -1;
    }
    if (want_write && !self->writable) {
        PyErr_SetString(PyExc_OSError, "connection is read-only");
        return -1;
    }
    if (self->kind == CMP_IO_KIND_UNKNOWN) {
        int kind = CMP_IO_KIND_OTHER;
        int err = cmp_io_kind(self->fd, &kind);
        if (err != 0) {
            cmp_raise_oserror(err);
            return -1;
        }
        self->kind = kind;
    }
    return 0;
}

static void
conn_drop_handle(ConnObject *self)
{
    cmp_handle_t fd = self->fd;
    self->fd = CMP_INVALID_HANDLE;
    self->kind = CMP_IO_KIND_UNKNOWN;
    if (fd != CMP_INVALID_HANDLE) {
        (void)cmp_io_close(fd);
    }
}

/* The stream is out of step after a frame we refused to read: as the
   stdlib does, a duplex connection stops reading, a read-only one closes. */
static PyObject *
conn_bad_length(ConnObject *self, const char *why)
{
    if (self->writable) {
        self->readable = 0;
    }
    else {
        conn_drop_handle(self);
    }
    PyErr_SetString(PyExc_OSError, why);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Reading.                                                            */

/* Read exactly `len` bytes into `buf` (frame.c): 0, or -1 with an
   exception set. */
static int
conn_read_piece(ConnObject *self, char *buf, size_t len, int flags)
{
    cmp_wire w = conn_wire(self);
    cmp_iobuf slot = {buf, len};
    return cmp_wire_read(&w, &slot, 1, flags);
}

/* Read a frame header; *size receives the payload length.  Returns 0, or
   -1 with an exception set (the frame is then unusable). */
static int
conn_read_header(ConnObject *self, uint64_t *size)
{
    cmp_wire w = conn_wire(self);
    int r = cmp_wire_read_header(&w, 0, size);
    if (r == CMP_FRAME_BAD) {
        conn_bad_length(self, "bad message length");
        return -1;
    }
    return r;
}

/* Refuse lengths no buffer can hold before allocating anything. */
static int
conn_check_length(ConnObject *self, uint64_t size)
{
    /* (asking the system costs a system call: only for long frames) */
    uint64_t mem = size > CONN_PROBE_SIZE ? cmp_io_physical_memory() : 0;
    if (size > (uint64_t)PY_SSIZE_T_MAX || (mem != 0 && size > mem)) {
        conn_bad_length(self, "bad message length: longer than this "
                              "machine's memory");
        return -1;
    }
    return 0;
}

/* Read a payload of `size` bytes into a new bytes object. */
static PyObject *
conn_read_payload(ConnObject *self, uint64_t size)
{
    if (conn_check_length(self, size) < 0) {
        return NULL;
    }
    size_t n = (size_t)size;
    if (n <= CONN_PROBE_SIZE) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (b == NULL) {
            return NULL;
        }
        if (conn_read_piece(self, PyBytes_AS_STRING(b), n, 0) < 0) {
            Py_DECREF(b);
            return NULL;
        }
        return b;
    }
    /* A huge claim: take the first CONN_PROBE_SIZE bytes into a scratch
       buffer, and only once they have arrived allocate the whole. */
    char *probe = PyMem_RawMalloc(CONN_PROBE_SIZE);
    if (probe == NULL) {
        return PyErr_NoMemory();
    }
    if (conn_read_piece(self, probe, CONN_PROBE_SIZE, 0) < 0) {
        PyMem_RawFree(probe);
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (b == NULL) {
        PyMem_RawFree(probe);
        return NULL;
    }
    memcpy(PyBytes_AS_STRING(b), probe, CONN_PROBE_SIZE);
    PyMem_RawFree(probe);
    if (conn_read_piece(self, PyBytes_AS_STRING(b) + CONN_PROBE_SIZE,
                        n - CONN_PROBE_SIZE, CMP_WIRE_STARTED) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return b;
}

/* One whole message as bytes; maxlength < 0 means no limit. */
static PyObject *
conn_recv_message(ConnObject *self, Py_ssize_t maxlength)
{
    uint64_t size;
    if (conn_read_header(self, &size) < 0) {
        return NULL;
    }
    if (maxlength >= 0 && size > (uint64_t)maxlength) {
        return conn_bad_length(self, "bad message length");
    }
    return conn_read_payload(self, size);
}

/* ------------------------------------------------------------------ */
/* Writing.                                                            */

/* Send one frame made of `count` payload pieces, stored from pieces[1]
   on; pieces[0] is filled with the header here. */
static int
conn_send_frame(ConnObject *self, cmp_iobuf *pieces, int count)
{
    unsigned char header[CMP_FRAME_HEADER_MAX];
    uint64_t total = 0;
    for (int i = 1; i <= count; i++) {
        total += pieces[i].len;
    }
    pieces[0].base = header;
    pieces[0].len = cmp_frame_header(header, total);
    cmp_wire w = conn_wire(self);
    return cmp_wire_write_all(&w, pieces, count + 1);
}

/* The pickler class and loads function of cmultiprocessing.reduction, and
   the kept pickler (pickler.c), looked up on first use. */
static int
conn_load_pickler(cmp_state *st)
{
    if (st->conn_dumps != NULL) {
        return 0;
    }
    PyObject *mod = PyImport_ImportModule("cmultiprocessing.reduction");
    if (mod == NULL) {
        return -1;
    }
    PyObject *cls = PyObject_GetAttrString(mod, "ForkingPickler");
    Py_DECREF(mod);
    if (cls == NULL) {
        return -1;
    }
    PyObject *kept = NULL;
    PyObject *loads = PyObject_GetAttrString(cls, "loads");
    PyObject *dumps = loads ? PyObject_GetAttrString(cls, "dumps") : NULL;
    if (dumps == NULL || cmp_pickler_make(st, cls, &kept) < 0) {
        Py_DECREF(cls);
        Py_XDECREF(loads);
        Py_XDECREF(dumps);
        return -1;
    }
    Py_DECREF(cls);
    Py_XSETREF(st->conn_kept, kept);
    Py_XSETREF(st->conn_loads, loads);
    Py_XSETREF(st->conn_dumps, dumps);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Connection methods.                                                 */

static PyObject *
Conn_send_bytes(ConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"buf", "offset", "size"};
    static const cmp_argspec spec = CMP_ARGSPEC("send_bytes", names, 1);
    PyObject *a[3];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (conn_check(self, 0, 1) < 0) {
        return NULL;
    }
    Py_ssize_t offset, size;
    if (cmp_arg_opt_ssize(a[1], 0, &offset) < 0 ||
        cmp_arg_opt_ssize(a[2], -1, &size) < 0) {
        return NULL;
    }
    int has_size = a[2] != NULL && a[2] != Py_None;
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset is negative");
        goto done;
    }
    if (view.len < offset) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset");
        goto done;
    }
    if (!has_size) {
        size = view.len - offset;
    }
    else if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size is negative");
        goto done;
    }
    else if (size > view.len - offset) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
        goto done;
    }
    cmp_iobuf pieces[2];
    pieces[1].base = (const char *)view.buf + offset;
    pieces[1].len = (size_t)size;
    if (conn_send_frame(self, pieces, 1) < 0) {
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
Conn_send(ConnObject *self, PyTypeObject *cls, PyObject *const *args,
          Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj"};
    static const cmp_argspec spec = CMP_ARGSPEC("send", names, 1);
    PyObject *a[1];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (conn_check(self, 0, 1) < 0) {
        return NULL;
    }
    cmp_state *st = PyType_GetModuleState(cls);
    if (conn_load_pickler(st) < 0) {
        return NULL;
    }
    PyObject *kept = Py_XNewRef(st->conn_kept); /* a reducer may reload */
    PyObject *chunks = NULL, *payload = NULL;
    PyObject *result = NULL;
    cmp_iobuf small[8];
    cmp_iobuf *pieces = small;
    Py_buffer view = {0};
    int r = cmp_pickler_dump(kept, a[0], &chunks);
    if (r < 0) {
        goto done;
    }
    if (r == 0) {
        /* no kept pickler free: the class's dumps(), one piece */
        payload = PyObject_CallOneArg(st->conn_dumps, a[0]);
        if (payload == NULL ||
            PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) {
            goto done;
        }
        pieces[1].base = view.buf;
        pieces[1].len = (size_t)view.len;
        if (conn_send_frame(self, pieces, 1) == 0) {
            result = Py_NewRef(Py_None);
        }
        PyBuffer_Release(&view);
        goto done;
    }
    /* chunks holds every chunk of the pickle, in order; while the kept
       pickler is busy nothing else appends to it. */
    Py_ssize_t n = PyList_GET_SIZE(chunks);
    if (n + 1 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        pieces = PyMem_New(cmp_iobuf, (size_t)n + 1);
        if (pieces == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, i);
        pieces[i + 1].base = PyBytes_AS_STRING(chunk);
        pieces[i + 1].len = (size_t)PyBytes_GET_SIZE(chunk);
    }
    if (conn_send_frame(self, pieces, (int)n) < 0) {
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    if (pieces != small) {
        PyMem_Free(pieces);
    }
    if (r > 0) {
        cmp_pickler_release(kept);
    }
    Py_XDECREF(payload);
    Py_XDECREF(kept);
    return result;
}

static PyObject *
Conn_recv_bytes(ConnObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"maxlength"};
    static const cmp_argspec spec = CMP_ARGSPEC("recv_bytes", names, 0);
    PyObject *a[1];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (conn_check(self, 1, 0) < 0) {
        return NULL;
    }
    Py_ssize_t maxlength;
    if (cmp_arg_opt_ssize(a[0], -1, &maxlength) < 0) {
        return NULL;
    }
    if (a[0] != NULL && a[0] != Py_None && maxlength < 0) {
        PyErr_SetString(PyExc_ValueError, "negative maxlength");
        return NULL;
    }
    return conn_recv_message(self, maxlength);
}

static PyObject *
Conn_recv_bytes_into(ConnObject *self, PyTypeObject *cls,
                     PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    static const char *const names[] = {"buf", "offset"};
    static const cmp_argspec spec = CMP_ARGSPEC("recv_bytes_into", names, 1);
    PyObject *a[2];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (conn_check(self, 1, 0) < 0) {
        return NULL;
    }
    Py_ssize_t offset;
    if (cmp_arg_opt_ssize(a[1], 0, &offset) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        goto done;
    }
    if (offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "offset too large");
        goto done;
    }
    uint64_t size;
    if (conn_read_header(self, &size) < 0) {
        goto done;
    }
    if (size > (uint64_t)(view.len - offset)) {
        /* Too long for the buffer: the message is still consumed, and
           handed over inside the exception, as the stdlib does. */
        PyObject *whole = conn_read_payload(self, size);
        if (whole != NULL) {
            cmp_state *st = PyType_GetModuleState(cls);
            PyErr_SetObject(st->BufferTooShort, whole);
            Py_DECREF(whole);
        }
        goto done;
    }
    if (conn_read_piece(self, (char *)view.buf + offset, (size_t)size, 0) <
        0) {
        goto done;
    }
    result = PyLong_FromUnsignedLongLong(size);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
Conn_recv(ConnObject *self, PyTypeObject *cls, PyObject *const *args,
          Py_ssize_t nargs, PyObject *kwnames)
{
    static const cmp_argspec spec = {"recv", NULL, 0, 0};
    if (cmp_parse_args(&spec, args, nargs, kwnames, NULL) < 0) {
        return NULL;
    }
    if (conn_check(self, 1, 0) < 0) {
        return NULL;
    }
    cmp_state *st = PyType_GetModuleState(cls);
    if (conn_load_pickler(st) < 0) {
        return NULL;
    }
    PyObject *msg = conn_recv_message(self, -1);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallOneArg(st->conn_loads, msg);
    Py_DECREF(msg);
    return obj;
}

static PyObject *
Conn_poll(ConnObject *self, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("poll", names, 0);
    PyObject *a[1];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (conn_check(self, 1, 0) < 0) {
        return NULL;
    }
    cmp_deadline deadline = cmp_deadline_in(1, 0.0);
    if (a[0] != NULL && cmp_deadline_parse(a[0], &deadline) < 0) {
        return NULL;
    }
    cmp_wire w = conn_wire(self);
    int r = cmp_wire_poll(&w, &deadline);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

static PyObject *
Conn_fileno(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
    cmp_handle_t h;
    if (cmp_conn_handle((PyObject *)self, &h) < 0) {
        return NULL;
    }
    return cmp_handle_to_int(h);
}

/* See cmp.h. */
PyObject *
cmp_conn_of_fileno(PyObject *method)
{
    if (!PyCFunction_Check(method) ||
        PyCFunction_GetFunction(method) !=
            (PyCFunction)(void (*)(void))Conn_fileno) {
        return NULL;
    }
    /* (a method of Connection's table is bound to its instances only) */
    return PyCFunction_GetSelf(method);
}

/* See cmp.h. */
int
cmp_conn_handle(PyObject *conn, cmp_handle_t *out)
{
    ConnObject *self = (ConnObject *)conn;
    if (CONN_CLOSED(self)) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return -1;
    }
    *out = self->fd;
    return 0;
}

static PyObject *
Conn_close(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
    cmp_handle_t fd = self->fd;
    if (fd == CMP_INVALID_HANDLE) {
        Py_RETURN_NONE;
    }
    self->fd = CMP_INVALID_HANDLE;
    self->kind = CMP_IO_KIND_UNKNOWN;
    int err = cmp_io_close(fd);
    if (err != 0) {
        return cmp_raise_oserror(err);
    }
    Py_RETURN_NONE;
}

/* Stop managing the handle without closing it (its owner closes it). */
static PyObject *
Conn_detach(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
    self->fd = CMP_INVALID_HANDLE;
    self->kind = CMP_IO_KIND_UNKNOWN;
    Py_RETURN_NONE;
}

static PyObject *
Conn_enter(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *
Conn_exit(ConnObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return Conn_close(self, NULL);
}

static PyObject *
Conn_reduce(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
    PyErr_Format(PyExc_TypeError,
                 "cannot pickle '%s' object outside of cmultiprocessing "
                 "(its ForkingPickler passes the handle to the receiver)",
                 Py_TYPE(self)->tp_name);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Attributes.                                                         */

static PyObject *
Conn_get_closed(ConnObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(CONN_CLOSED(self));
}

static PyObject *
Conn_get_readable(ConnObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->readable);
}

static PyObject *
Conn_get_writable(ConnObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->writable);
}

static int
Conn_set_flag(ConnObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    int v = PyObject_IsTrue(value);
    if (v < 0) {
        return -1;
    }
    if (closure != NULL) {
        self->writable = (char)v;
    }
    else {
        self->readable = (char)v;
    }
    return 0;
}

static PyObject *
Conn_get_handle(ConnObject *self, void *Py_UNUSED(closure))
{
    if (CONN_CLOSED(self)) {
        Py_RETURN_NONE;
    }
    return cmp_handle_to_int(self->fd);
}

/* conn._handle = None forgets the handle without closing it (the stdlib's
   tests do that); an integer adopts another handle. */
static int
Conn_set_handle(ConnObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || value == Py_None) {
        self->fd = CMP_INVALID_HANDLE;
        self->kind = CMP_IO_KIND_UNKNOWN;
        return 0;
    }
    cmp_handle_t fd;
    if (cmp_arg_handle(value, "invalid handle", &fd) < 0) {
        return -1;
    }
    self->fd = fd;
    self->kind = CMP_IO_KIND_UNKNOWN;
    return 0;
}

static PyGetSetDef Conn_getset[] = {
    {"closed", (getter)Conn_get_closed, NULL,
     "True if the connection is closed", NULL},
    {"readable", (getter)Conn_get_readable, NULL,
     "True if the connection is readable", NULL},
    {"writable", (getter)Conn_get_writable, NULL,
     "True if the connection is writable", NULL},
    {"_readable", (getter)Conn_get_readable, (setter)Conn_set_flag, NULL,
     NULL},
    {"_writable", (getter)Conn_get_writable, (setter)Conn_set_flag, NULL,
     (void *)1},
    {"_handle", (getter)Conn_get_handle, (setter)Conn_set_handle,
     "The handle, or None once closed", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Conn_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(ConnObject, weakrefs),
     Py_READONLY, NULL},
    {"__dictoffset__", Py_T_PYSSIZET, offsetof(ConnObject, dict), Py_READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

#define CONN_KW (METH_FASTCALL | METH_KEYWORDS)
#define CONN_CM (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef Conn_methods[] = {
    {"send_bytes", (PyCFunction)(void (*)(void))Conn_send_bytes, CONN_KW,
     "send_bytes(buf, offset=0, size=None)\n--\n\n"
     "Send the bytes of a bytes-like object as one message."},
    {"send", (PyCFunction)(void (*)(void))Conn_send, CONN_CM,
     "send(obj)\n--\n\nSend a picklable object."},
    {"recv_bytes", (PyCFunction)(void (*)(void))Conn_recv_bytes, CONN_KW,
     "recv_bytes(maxlength=None)\n--\n\nReceive one message as bytes."},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))Conn_recv_bytes_into,
     CONN_CM,
     "recv_bytes_into(buf, offset=0)\n--\n\n"
     "Receive one message into a writable buffer; return its length."},
    {"recv", (PyCFunction)(void (*)(void))Conn_recv, CONN_CM,
     "recv()\n--\n\nReceive a picklable object."},
    {"poll", (PyCFunction)(void (*)(void))Conn_poll, CONN_KW,
     "poll(timeout=0.0)\n--\n\nWhether there is input available to read."},
    {"fileno", (PyCFunction)Conn_fileno, METH_NOARGS,
     "File descriptor of the connection."},
    {"close", (PyCFunction)Conn_close, METH_NOARGS, "Close the connection."},
    {"_detach", (PyCFunction)Conn_detach, METH_NOARGS,
     "Stop managing the underlying file descriptor or handle."},
    {"__enter__", (PyCFunction)Conn_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Conn_exit, METH_FASTCALL, NULL},
    {"__reduce__", (PyCFunction)Conn_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* Life cycle.                                                         */

static PyObject *
Conn_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    ConnObject *self = (ConnObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->fd = CMP_INVALID_HANDLE;
    self->kind = CMP_IO_KIND_UNKNOWN;
    self->readable = 1;
    self->writable = 1;
    return (PyObject *)self;
}

static int
Conn_init(ConnObject *self, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"handle", "readable", "writable"};
    static const cmp_argspec spec = CMP_ARGSPEC("Connection", names, 1);
    PyObject *a[3];
    cmp_handle_t fd;
    int r, w;
    if (cmp_parse_tuple(&spec, args, kwds, a) < 0 ||
        cmp_arg_handle(a[0], "invalid handle", &fd) < 0 ||
        cmp_arg_bool(a[1], 1, &r) < 0 || cmp_arg_bool(a[2], 1, &w) < 0) {
        return -1;
    }
    if (!r && !w) {
        PyErr_SetString(PyExc_ValueError,
                        "at least one of `readable` and `writable` must be "
                        "True");
        return -1;
    }
    self->fd = fd;
    self->kind = CMP_IO_KIND_UNKNOWN;
    self->readable = (char)r;
    self->writable = (char)w;
    return 0;
}

static void
Conn_finalize(ConnObject *self)
{
    /* __del__: a connection nobody references any more closes its handle. */
    if (!CONN_CLOSED(self)) {
        conn_drop_handle(self);
    }
}

static int
Conn_traverse(ConnObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    return 0;
}

static int
Conn_clear(ConnObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void
Conn_dealloc(ConnObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return;   /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    (void)Conn_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
Conn_repr(ConnObject *self)
{
    if (CONN_CLOSED(self)) {
        return PyUnicode_FromFormat("<%s closed>", Py_TYPE(self)->tp_name);
    }
    return PyUnicode_FromFormat("<%s handle=%lld%s%s>", Py_TYPE(self)->tp_name,
                                cmp_io_handle_value(self->fd),
                                self->readable ? " r" : "",
                                self->writable ? " w" : "");
}

static PyType_Slot Conn_slots[] = {
    {Py_tp_doc, "Connection(handle, readable=True, writable=True)\n--\n\n"
                "Messages over a socket or pipe file descriptor."},
    {Py_tp_new, Conn_new},
    {Py_tp_init, Conn_init},
    {Py_tp_finalize, Conn_finalize},
    {Py_tp_dealloc, Conn_dealloc},
    {Py_tp_traverse, Conn_traverse},
    {Py_tp_clear, Conn_clear},
    {Py_tp_repr, Conn_repr},
    {Py_tp_methods, Conn_methods},
    {Py_tp_getset, Conn_getset},
    {Py_tp_members, Conn_members},
    {0, NULL},
};

static PyType_Spec Conn_spec = {
    .name = "_cmultiprocessing.Connection",
    .basicsize = sizeof(ConnObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Conn_slots,
};

/* ------------------------------------------------------------------ */
/* wait(object_list, timeout=None)                                     */

/* The handle of one object of a wait() list: a Connection's own, what
   fileno() returns, or the object itself as an integer. */
static int
wait_handle_of(cmp_state *st, PyObject *obj, cmp_handle_t *fd)
{
    if (PyObject_TypeCheck(obj, (PyTypeObject *)st->Connection_type)) {
        ConnObject *c = (ConnObject *)obj;
        if (CONN_CLOSED(c)) {
            PyErr_SetString(PyExc_OSError, "handle is closed");
            return -1;
        }
        *fd = c->fd;
        return 0;
    }
    return cmp_arg_fileno(obj, "Invalid file descriptor", fd);
}

/* One slice of wait()'s wait (wait.h's step): ready handles in
   ready[]/nready. */
typedef struct {
    const cmp_handle_t *fds;
    size_t count;
    unsigned char *ready;
    size_t nready;
} cmp_wait_many_ctx;

static int
wait_many_step(void *arg, double slice, int *err)
{
    cmp_wait_many_ctx *ctx = arg;
    ctx->nready = 0;
    *err = cmp_io_wait_many(ctx->fds, ctx->count, slice, ctx->ready,
                            &ctx->nready);
    if (*err == CMP_INTR) {
        *err = 0;
        ctx->nready = 0;
        return 0;
    }
    return *err != 0 ? -1 : ctx->nready > 0;
}

static PyObject *
cmp_wait(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
         PyObject *kwnames)
{
    static const char *const names[] = {"object_list", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("wait", names, 1);
    PyObject *a[2];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    cmp_deadline deadline;
    if (cmp_deadline_parse(a[1], &deadline) < 0) {
        return NULL;
    }
    cmp_state *st = cmp_get_state(module);
    PyObject *objs = PySequence_List(a[0]);
    if (objs == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(objs);
    PyObject *result = NULL;
    cmp_handle_t *fds = PyMem_New(cmp_handle_t, (size_t)n + 1);
    unsigned char *ready = PyMem_Malloc((size_t)n + 1);
    if (fds == NULL || ready == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (wait_handle_of(st, PyList_GET_ITEM(objs, i), &fds[i]) < 0) {
            goto done;
        }
    }
    cmp_wait_many_ctx ctx = {fds, (size_t)n, ready, 0};
    int err = cmp_io_wait_many(fds, (size_t)n, 0.0, ready, &ctx.nready);
    if (err != 0 && err != CMP_INTR) {
        cmp_raise_oserror(err);
        goto done;
    }
    if (err != 0 || ctx.nready == 0) {
        ctx.nready = 0;
        if (err != 0 && PyErr_CheckSignals() < 0) {
            goto done;
        }
        if (cmp_wait_sliced(&deadline, wait_many_step, &ctx) < 0) {
            goto done;
        }
    }
    size_t nready = ctx.nready;
    result = PyList_New(0);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; nready > 0 && i < n; i++) {
        if (ready[i] && PyList_Append(result, PyList_GET_ITEM(objs, i)) < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
done:
    PyMem_Free(fds);
    PyMem_Free(ready);
    Py_DECREF(objs);
    return result;
}

static PyMethodDef conn_functions[] = {
    {"wait", (PyCFunction)(void (*)(void))cmp_wait, CONN_KW,
     "wait(object_list, timeout=None)\n--\n\n"
     "Wait until objects of object_list are ready to read; return those."},
    {NULL, NULL, 0, NULL},
};

int
cmp_connection_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    st->Connection_type = PyType_FromModuleAndSpec(module, &Conn_spec, NULL);
    if (st->Connection_type == NULL) {
        return -1;
    }
    /* the kept pickler's type, shared with the queues */
    if (cmp_pickler_exec(module) < 0) {
        return -1;
    }
    if (PyModule_AddType(module, (PyTypeObject *)st->Connection_type) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, conn_functions);
}
