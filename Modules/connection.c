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
 * objects are written by the pickler straight into a FrameWriter whose
 * chunks become the pieces of that gathered write.  Receiving reads the
 * header, then the payload straight into a fresh bytes object (or the
 * caller's buffer for recv_bytes_into).
 *
 * Every operation first tries once with the GIL held and without blocking
 * (MSG_DONTWAIT on sockets, FIONREAD on pipes); only when that cannot
 * finish does it release the GIL.  Waits for the start of a message spin
 * briefly first (spin.h), then are sliced (CMP_WAIT_SLICE) so that signal
 * handlers run; long payloads on sockets are read as they stream in.
 */
#include "cmp.h"
#include "spin.h"

#include <string.h>

/* Member flags under their 3.12 names on 3.11 too. */
#ifndef Py_T_PYSSIZET
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_READONLY READONLY
#endif

/* Keeping an exception aside while cleaning up, on 3.11 too. */
#if PY_VERSION_HEX >= 0x030C0000
typedef struct {
    PyObject *exc;
} conn_saved_error;
#  define CONN_SAVE_ERROR(s) ((s).exc = PyErr_GetRaisedException())
#  define CONN_RESTORE_ERROR(s) PyErr_SetRaisedException((s).exc)
#else
typedef struct {
    PyObject *type, *value, *tb;
} conn_saved_error;
#  define CONN_SAVE_ERROR(s) PyErr_Fetch(&(s).type, &(s).value, &(s).tb)
#  define CONN_RESTORE_ERROR(s) PyErr_Restore((s).type, (s).value, (s).tb)
#endif

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

static int
conn_would_block(int err)
{
    return err == CMP_IO_WOULDBLOCK;
}

/* Payloads longer than this are read as they stream in. */
#define CONN_STREAM_MIN ((size_t)256 * 1024)

/* A spinning wait's check: is the handle readable now? */
static int
conn_check_readable(void *arg, int *ready)
{
    return cmp_io_wait_readable(*(const cmp_handle_t *)arg, 0.0, ready);
}

/* Read exactly `len` bytes into `buf`.  Returns 0 when done, -1 with an
   exception set, or 1 at end of file (*done tells how much came first).
   With `sliced`, the wait for the first byte is cut into CMP_WAIT_SLICE
   pieces so that signal handlers run while nothing arrives. */
static int
conn_read_exact(ConnObject *self, char *buf, size_t len, int sliced,
                size_t *done_out)
{
    const cmp_handle_t fd = self->fd;
    const int kind = self->kind;
    size_t done = 0;
    int err;

    *done_out = 0;
    if (len == 0) {
        return 0;
    }

    /* One try with the GIL held, that cannot block -- skipped for the
       start of a message when the last one had to be waited for (a
       request/reply exchange): the sliced wait below costs no more than
       a try that finds nothing. */
    if (!(sliced && self->waited)) {
        size_t got = 0;
        if (kind == CMP_IO_KIND_SOCKET) {
            err = cmp_io_read(fd, kind, buf, len, 1, &got);
        }
        else {
            size_t avail = 0;
            err = cmp_io_pending(fd, &avail);
            if (err == 0 && avail > 0) {
                err = cmp_io_read(fd, kind, buf, len < avail ? len : avail,
                                  0, &got);
            }
            else if (err == 0 || err != CMP_IO_BADHANDLE) {
                err = CMP_IO_WOULDBLOCK;   /* nothing yet, or not a pipe: wait */
            }
        }
        if (err == 0) {
            if (got == 0) {
                return 1;
            }
            done = got;
        }
        else if (err == CMP_IO_INTERRUPTED) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
        }
        else if (!conn_would_block(err)) {
            cmp_raise_oserror(err);
            return -1;
        }
    }

    if (sliced) {
        self->waited = done < len;
    }
    double spin = (sliced && done == 0) ? cmp_spin_budget(&self->spin) : 0.0;
    /* Long payloads on a socket are read as they stream in (see below),
       where another CPU can be sending meanwhile. */
    const int stream = !sliced && kind == CMP_IO_KIND_SOCKET &&
                       len - done > CONN_STREAM_MIN && cmp_spin_possible();
    while (done < len) {
        int ready = 1, eof = 0, caught = 0;
        const double budget = spin;
        Py_BEGIN_ALLOW_THREADS
        err = 0;
        if (sliced && done == 0) {
            ready = 0;
            if (budget > 0.0) {
                err = cmp_spin_until(budget, conn_check_readable,
                                     (void *)&fd, &ready);
                caught = ready;
            }
            if (err == 0 && !ready) {
                err = cmp_io_wait_readable(fd, CMP_WAIT_SLICE, &ready);
            }
        }
        if (err == 0 && ready) {
            while (done < len) {
                size_t got = 0;
                if (stream) {
                    /* The rest of a frame is on its way: take what has
                       come, check for more for a while, and sleep only
                       when the peer has really stopped. */
                    err = cmp_io_read(fd, kind, buf + done, len - done, 1,
                                      &got);
                    if (err == CMP_IO_WOULDBLOCK) {
                        int more = 0;
                        err = cmp_spin_until(CMP_SPIN_MAX,
                                             conn_check_readable,
                                             (void *)&fd, &more);
                        if (err == 0 && more) {
                            continue;
                        }
                        if (err == 0) {
                            err = cmp_io_read(fd, kind, buf + done,
                                              len - done, 0, &got);
                        }
                    }
                }
                else {
                    err = cmp_io_read(fd, kind, buf + done, len - done, 0,
                                      &got);
                }
                if (err != 0) {
                    break;
                }
                if (got == 0) {
                    eof = 1;
                    break;
                }
                done += got;
            }
        }
        Py_END_ALLOW_THREADS
        if (budget > 0.0) {
            cmp_spin_result(&self->spin, budget, caught);
            spin = 0.0;
        }
        *done_out = done;
        if (eof) {
            return 1;
        }
        if (err == CMP_IO_INTERRUPTED || (err == 0 && !ready)) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        if (err != 0) {
            cmp_raise_oserror(err);
            return -1;
        }
    }
    *done_out = done;
    return 0;
}

/* Turn an end of file into the stdlib's exceptions: EOFError when it came
   where a read started, OSError when it cut a piece short. */
static int
conn_eof(size_t done)
{
    if (done == 0) {
        PyErr_SetNone(PyExc_EOFError);
    }
    else {
        PyErr_SetString(PyExc_OSError, "got end of file during message");
    }
    return -1;
}

static int
conn_read_piece(ConnObject *self, char *buf, size_t len, int sliced)
{
    size_t done;
    int r = conn_read_exact(self, buf, len, sliced, &done);
    if (r == 1) {
        return conn_eof(done);
    }
    return r;
}

/* Read a frame header; *size receives the payload length.  Returns 0, or
   -1 with an exception set (the frame is then unusable). */
static int
conn_read_header(ConnObject *self, uint64_t *size)
{
    unsigned char h[8];
    if (conn_read_piece(self, (char *)h, 4, 1) < 0) {
        return -1;
    }
    uint32_t u = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                 ((uint32_t)h[2] << 8) | (uint32_t)h[3];
    if (u == 0xffffffffu) {
        if (conn_read_piece(self, (char *)h, 8, 0) < 0) {
            return -1;
        }
        uint64_t v = 0;
        for (int i = 0; i < 8; i++) {
            v = (v << 8) | h[i];
        }
        *size = v;
        return 0;
    }
    if (u & 0x80000000u) {
        /* Negative and not the -1 marker: no peer of ours sends that. */
        conn_bad_length(self, "bad message length");
        return -1;
    }
    *size = u;
    return 0;
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
    size_t done;
    int r = conn_read_exact(self, PyBytes_AS_STRING(b) + CONN_PROBE_SIZE,
                            n - CONN_PROBE_SIZE, 0, &done);
    if (r != 0) {
        Py_DECREF(b);
        if (r == 1) {
            PyErr_SetString(PyExc_OSError, "got end of file during message");
        }
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

/* Header for a payload of n bytes; returns its length (4 or 12). */
static size_t
conn_make_header(unsigned char *h, uint64_t n)
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

/* Drop `sent` bytes from the front of pieces[*first..count-1]. */
static void
conn_advance(cmp_iobuf *pieces, int count, int *first, size_t sent)
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

/* Write every byte of the pieces (the caller keeps them alive). */
static int
conn_write_all(ConnObject *self, cmp_iobuf *pieces, int count)
{
    const cmp_handle_t fd = self->fd;
    const int kind = self->kind;
    int first = 0, err;
    size_t sent = 0;

    conn_advance(pieces, count, &first, 0);
    if (first < count && kind == CMP_IO_KIND_SOCKET) {
        err = cmp_io_writev(fd, kind, pieces + first, count - first, 1,
                            &sent);
        if (err == 0) {
            conn_advance(pieces, count, &first, sent);
        }
        else if (err == CMP_IO_INTERRUPTED) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
        }
        else if (!conn_would_block(err)) {
            cmp_raise_oserror(err);
            return -1;
        }
    }
    while (first < count) {
        Py_BEGIN_ALLOW_THREADS
        err = 0;
        while (first < count) {
            err = cmp_io_writev(fd, kind, pieces + first, count - first, 0,
                                &sent);
            if (err != 0) {
                break;
            }
            conn_advance(pieces, count, &first, sent);
        }
        Py_END_ALLOW_THREADS
        if (err == CMP_IO_INTERRUPTED) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        if (err != 0) {
            cmp_raise_oserror(err);
            return -1;
        }
    }
    return 0;
}

/* Send one frame made of `count` payload pieces, stored from pieces[1]
   on; pieces[0] is filled with the header here. */
static int
conn_send_frame(ConnObject *self, cmp_iobuf *pieces, int count)
{
    unsigned char header[12];
    uint64_t total = 0;
    for (int i = 1; i <= count; i++) {
        total += pieces[i].len;
    }
    pieces[0].base = header;
    pieces[0].len = conn_make_header(header, total);
    return conn_write_all(self, pieces, count + 1);
}

/* ------------------------------------------------------------------ */
/* FrameWriter: the file a pickler writes into; it keeps the chunks.   */

/* Building a pickler costs several times what pickling a small object
   does, so one pickler (with its writer) is kept in the module state and
   reused while nobody else is using it: `busy` says it is taken (another
   thread, or a reducer that sends, gets a fresh pair instead).  It is
   rebuilt when the reducer tables changed since it was made (their sizes,
   or the class's _generation that register() bumps), since its
   dispatch_table is a snapshot of them. */
typedef struct {
    PyObject_HEAD
    PyObject *chunks;       /* list of bytes */
    PyObject *pickler;      /* the pickler writing here, when cached */
    int busy;
    Py_ssize_t copyreg_size;
    Py_ssize_t extra_size;
    long generation;        /* ForkingPickler._generation when made */
} FrameWriter;

static PyObject *
FrameWriter_write(FrameWriter *self, PyObject *data)
{
    PyObject *b;
    if (PyBytes_CheckExact(data)) {
        b = Py_NewRef(data);
    }
    else {
        /* A bytearray or view could change before the frame goes out. */
        b = PyBytes_FromObject(data);
        if (b == NULL) {
            return NULL;
        }
    }
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    int r = PyList_Append(self->chunks, b);
    Py_DECREF(b);
    if (r < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

static int
FrameWriter_traverse(FrameWriter *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->chunks);
    Py_VISIT(self->pickler);
    return 0;
}

static int
FrameWriter_clear(FrameWriter *self)
{
    Py_CLEAR(self->chunks);
    Py_CLEAR(self->pickler);
    return 0;
}

static void
FrameWriter_dealloc(FrameWriter *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)FrameWriter_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef FrameWriter_methods[] = {
    {"write", (PyCFunction)FrameWriter_write, METH_O,
     "Keep one chunk of the message being built."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot FrameWriter_slots[] = {
    {Py_tp_doc, "Collects what a pickler writes, for one gathered send."},
    {Py_tp_methods, FrameWriter_methods},
    {Py_tp_traverse, FrameWriter_traverse},
    {Py_tp_clear, FrameWriter_clear},
    {Py_tp_dealloc, FrameWriter_dealloc},
    {0, NULL},
};

static PyType_Spec FrameWriter_spec = {
    .name = "_cmultiprocessing._FrameWriter",
    .basicsize = sizeof(FrameWriter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = FrameWriter_slots,
};

/* The pickler class and loads function of cmultiprocessing.reduction, and
   the two reducer tables its picklers copy, looked up on first use. */
static int
conn_load_pickler(cmp_state *st)
{
    if (st->conn_pickler != NULL) {
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
    PyObject *loads = PyObject_GetAttrString(cls, "loads");
    PyObject *extra = loads ? PyObject_GetAttrString(cls, "_extra_reducers")
                            : NULL;
    PyObject *table = extra ? PyObject_GetAttrString(
                                  cls, "_copyreg_dispatch_table")
                            : NULL;
    if (table == NULL) {
        /* Without both tables there is nothing to check a cached pickler
           against: every send then builds its own. */
        PyErr_Clear();
        Py_CLEAR(extra);
    }
    else if (!PyDict_Check(extra) || !PyDict_Check(table)) {
        Py_CLEAR(extra);
        Py_CLEAR(table);
    }
    if (loads == NULL) {
        Py_DECREF(cls);
        return -1;
    }
    Py_XSETREF(st->conn_extra_reducers, extra);
    Py_XSETREF(st->conn_copyreg_table, table);
    Py_XSETREF(st->conn_loads, loads);
    Py_XSETREF(st->conn_pickler, cls);
    return 0;
}

/* ForkingPickler._generation, or -1 when it has none (or not an int). */
static long
conn_generation(cmp_state *st)
{
    PyObject *g = PyObject_GetAttr(st->conn_pickler, st->conn_str_generation);
    if (g == NULL) {
        PyErr_Clear();
        return -1;
    }
    long v = PyLong_Check(g) ? PyLong_AsLong(g) : -1;
    Py_DECREF(g);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
    }
    return v;
}

/* A new writer with a pickler of the ForkingPickler class on it. */
static FrameWriter *
frame_writer_new(cmp_state *st)
{
    PyTypeObject *tp = (PyTypeObject *)st->FrameWriter_type;
    FrameWriter *w = PyObject_GC_New(FrameWriter, tp);
    if (w == NULL) {
        return NULL;
    }
    Py_INCREF(tp);
    w->pickler = NULL;
    w->busy = 0;
    w->copyreg_size = w->extra_size = -1;
    w->chunks = PyList_New(0);
    PyObject_GC_Track(w);
    if (w->chunks == NULL) {
        Py_DECREF(w);
        return NULL;
    }
    w->generation = -1;
    if (st->conn_copyreg_table != NULL) {
        w->copyreg_size = PyDict_Size(st->conn_copyreg_table);
        w->extra_size = PyDict_Size(st->conn_extra_reducers);
        w->generation = conn_generation(st);
    }
    PyObject *args[2] = {(PyObject *)w, Py_None};
    w->pickler = PyObject_Vectorcall(st->conn_pickler, args, 2, NULL);
    if (w->pickler == NULL) {
        Py_DECREF(w);
        return NULL;
    }
    return w;
}

/* The cached writer (marked busy) if it is free and still current, else a
   fresh one.  Returns a new reference, or NULL with an exception set. */
static FrameWriter *
frame_writer_take(cmp_state *st)
{
    FrameWriter *w = (FrameWriter *)st->conn_cache;
    if (st->conn_copyreg_table == NULL) {
        return frame_writer_new(st);
    }
    if (w != NULL) {
        if (w->busy) {
            return frame_writer_new(st);
        }
        if (w->copyreg_size == PyDict_Size(st->conn_copyreg_table) &&
            w->extra_size == PyDict_Size(st->conn_extra_reducers) &&
            w->generation == conn_generation(st) && w->generation != -1) {
            w->busy = 1;
            return (FrameWriter *)Py_NewRef(w);
        }
        Py_CLEAR(st->conn_cache);       /* stale: tables changed */
    }
    w = frame_writer_new(st);
    if (w == NULL) {
        return NULL;
    }
    if (st->conn_cache == NULL) {
        w->busy = 1;
        st->conn_cache = Py_NewRef(w);
    }
    return w;
}

/* Done with a writer: drop its chunks and the pickler's memo (which keeps
   every pickled object alive), and free it for the next send. */
static void
frame_writer_give_back(cmp_state *st, FrameWriter *w)
{
    conn_saved_error saved;
    CONN_SAVE_ERROR(saved);
    if (w->chunks != NULL) {
        (void)PyList_SetSlice(w->chunks, 0, PyList_GET_SIZE(w->chunks),
                              NULL);
    }
    if (w->busy && w->pickler != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(w->pickler,
                                                st->conn_str_clear_memo);
        if (r == NULL) {
            /* A pickler that cannot forget is not reused. */
            PyErr_Clear();
            if (st->conn_cache == (PyObject *)w) {
                Py_CLEAR(st->conn_cache);
            }
        }
        Py_XDECREF(r);
    }
    w->busy = 0;
    CONN_RESTORE_ERROR(saved);
    Py_DECREF(w);
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
    FrameWriter *w = frame_writer_take(st);
    if (w == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    cmp_iobuf small[8];
    cmp_iobuf *pieces = small;
    PyObject *r = PyObject_CallMethodOneArg(w->pickler, st->conn_str_dump,
                                            a[0]);
    if (r == NULL) {
        goto done;
    }
    Py_DECREF(r);
    /* w->chunks holds every chunk of the pickle, in order; while the
       writer is busy nothing else appends to it. */
    Py_ssize_t n = PyList_GET_SIZE(w->chunks);
    if (n + 1 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        pieces = PyMem_New(cmp_iobuf, (size_t)n + 1);
        if (pieces == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *chunk = PyList_GET_ITEM(w->chunks, i);
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
    frame_writer_give_back(st, w);
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
    static const cmp_argspec spec =
        CMP_ARGSPEC("recv_bytes_into", names, 1);
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

/* Wait for `fd` to be readable for at most `seconds` (has_timeout == 0:
   forever), in slices.  Returns 1 ready, 0 timed out, -1 error. */
static int
conn_wait_one(cmp_handle_t fd, int has_timeout, double seconds)
{
    int ready = 0, err;
    err = cmp_io_wait_readable(fd, 0.0, &ready);
    if (err == 0 && (ready || (has_timeout && seconds <= 0.0))) {
        return ready;
    }
    double deadline = cmp_monotonic() + seconds;
    while (err == 0 || err == CMP_IO_INTERRUPTED) {
        double slice = CMP_WAIT_SLICE;
        if (has_timeout) {
            double left = deadline - cmp_monotonic();
            if (left <= 0.0) {
                return 0;
            }
            if (left < slice) {
                slice = left;
            }
        }
        Py_BEGIN_ALLOW_THREADS
        err = cmp_io_wait_readable(fd, slice, &ready);
        Py_END_ALLOW_THREADS
        if (err == 0 && ready) {
            return 1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    cmp_raise_oserror(err);
    return -1;
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
    int has_timeout = 1;
    double seconds = 0.0;
    if (a[0] != NULL && cmp_parse_timeout(a[0], &has_timeout, &seconds) < 0) {
        return NULL;
    }
    int r = conn_wait_one(self->fd, has_timeout, seconds);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

static PyObject *
Conn_fileno(ConnObject *self, PyObject *Py_UNUSED(ignored))
{
    if (CONN_CLOSED(self)) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return NULL;
    }
    return cmp_handle_to_int(self->fd);
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
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL,
     NULL},
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
    return PyUnicode_FromFormat("<%s handle=%lld%s%s>",
                                Py_TYPE(self)->tp_name,
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
    int has_timeout;
    double seconds;
    if (cmp_parse_timeout(a[1], &has_timeout, &seconds) < 0) {
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
    double deadline = cmp_monotonic() + seconds;
    size_t nready = 0;
    int err = cmp_io_wait_many(fds, (size_t)n, 0.0, ready, &nready);
    while (err == 0 || err == CMP_IO_INTERRUPTED) {
        if (err == 0 && nready > 0) {
            break;
        }
        double slice = CMP_WAIT_SLICE;
        if (has_timeout) {
            double left = deadline - cmp_monotonic();
            if (left <= 0.0) {
                nready = 0;
                err = 0;
                break;
            }
            if (left < slice) {
                slice = left;
            }
        }
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        err = cmp_io_wait_many(fds, (size_t)n, slice, ready, &nready);
        Py_END_ALLOW_THREADS
    }
    if (err != 0) {
        cmp_raise_oserror(err);
        goto done;
    }
    result = PyList_New(0);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; nready > 0 && i < n; i++) {
        if (ready[i] &&
            PyList_Append(result, PyList_GET_ITEM(objs, i)) < 0) {
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
    st->FrameWriter_type =
        PyType_FromModuleAndSpec(module, &FrameWriter_spec, NULL);
    if (st->FrameWriter_type == NULL) {
        return -1;
    }
    st->conn_str_dump = PyUnicode_InternFromString("dump");
    if (st->conn_str_dump == NULL) {
        return -1;
    }
    st->conn_str_generation = PyUnicode_InternFromString("_generation");
    if (st->conn_str_generation == NULL) {
        return -1;
    }
    st->conn_str_clear_memo = PyUnicode_InternFromString("clear_memo");
    if (st->conn_str_clear_memo == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, (PyTypeObject *)st->Connection_type) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, conn_functions);
}
