/*
 * forkserver.c -- the native ends of a forkserver request (POSIX only).
 *
 *   forkserver_send(address, fds, handshake=None)
 *       The client's end: connect, let handshake(fd) talk, send the fds.
 *   forkserver_serve(listener_fd, alive_fd, max_fds, handshake=None,
 *                    timeout=None)
 *       The server's loop: accept requests, fork a child for each, tell
 *       each client its child's pid and later its exit code.  Only the
 *       handshake on each request connection (authentication, see
 *       forkserver.py) calls back into Python, with the GIL held.
 *
 * The wire (platform/forkserver.h) is in platform/posix_forkserver.c; the
 * waits are the io layer's (cmp_io_wait_many), forking and reaping
 * platform/proc.h's.  On Windows this file adds nothing.
 */
#include "cmp.h"
#include "platform/forkserver.h"

#include <errno.h>

#ifdef CMP_POSIX

/* A str or bytes address -> bytes kept in *holder; abstract addresses
   (leading NUL) are allowed, so no NUL check as with paths. */
static int
address_bytes(PyObject *address, PyObject **holder)
{
    if (PyUnicode_Check(address)) {
        *holder = PyUnicode_EncodeFSDefault(address);
    }
    else if (PyBytes_Check(address)) {
        *holder = Py_NewRef(address);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "address must be str or bytes, not %.100s",
                     Py_TYPE(address)->tp_name);
        return -1;
    }
    return *holder == NULL ? -1 : 0;
}

/* A sequence of at most CMP_FS_MAX_FDS non-negative ints -> fds[], *n. */
static int
request_fds(PyObject *obj, int *fds, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(obj, "fds must be a sequence of ints");
    if (seq == NULL) {
        return -1;
    }
    *n = PySequence_Fast_GET_SIZE(seq);
    if (*n > CMP_FS_MAX_FDS) {
        PyErr_SetString(PyExc_ValueError, "too many fds");
        goto error;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        if (cmp_arg_int(PySequence_Fast_GET_ITEM(seq, i), "fd", &fds[i]) < 0) {
            goto error;
        }
        if (fds[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "negative file descriptor");
            goto error;
        }
    }
    Py_DECREF(seq);
    return 0;
error:
    Py_DECREF(seq);
    return -1;
}

/* handshake(fd) for a request connection, unless handshake is None:
   1 when it returned a true value, 0 for a false one, -1 when it raised. */
static int
call_handshake(PyObject *handshake, int fd)
{
    if (handshake == Py_None) {
        return 1;
    }
    PyObject *num = PyLong_FromLong(fd);
    if (num == NULL) {
        return -1;
    }
    PyObject *res = PyObject_CallOneArg(handshake, num);
    Py_DECREF(num);
    if (res == NULL) {
        return -1;
    }
    int ok = PyObject_IsTrue(res);
    Py_DECREF(res);
    return ok;
}

/* forkserver_send(address, fds, handshake=None)
   Connect to the server, let handshake(fd) talk over the connection (it
   raises to give up), then send the fds and close. */
static PyObject *
forkserver_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"address", "fds", "handshake"};
    static const cmp_argspec spec = CMP_ARGSPEC("forkserver_send", names, 2);
    PyObject *a[3], *addr = NULL;
    int fds[CMP_FS_MAX_FDS];
    Py_ssize_t n = 0;
    int sock = -1, err;
    (void)module;

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        address_bytes(a[0], &addr) < 0) {
        return NULL;
    }
    PyObject *handshake = a[2] != NULL ? a[2] : Py_None;
    if (handshake != Py_None && !PyCallable_Check(handshake)) {
        PyErr_SetString(PyExc_TypeError, "handshake must be callable or None");
        goto error;
    }
    if (request_fds(a[1], fds, &n) < 0) {
        goto error;
    }
    const char *raw = PyBytes_AS_STRING(addr);
    size_t rawlen = (size_t)PyBytes_GET_SIZE(addr);
    Py_BEGIN_ALLOW_THREADS
    err = cmp_fs_connect(raw, rawlen, &sock);
    Py_END_ALLOW_THREADS
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, a[0]);
        goto error;
    }
    if (call_handshake(handshake, sock) < 0) {
        goto error;
    }
    Py_BEGIN_ALLOW_THREADS
    err = cmp_fs_send_fds(sock, fds, (size_t)n);
    Py_END_ALLOW_THREADS
    if (err != 0) {
        cmp_raise_oserror(err);
        goto error;
    }
    cmp_fs_close_fds(&sock, 1);
    Py_DECREF(addr);
    Py_RETURN_NONE;
error:
    cmp_fs_close_fds(&sock, 1);
    Py_XDECREF(addr);
    return NULL;
}

/* The server's children: pid -> the fd on which its client waits. */
typedef struct {
    long pid;
    int fd;
} fs_child;

typedef struct {
    fs_child *items;
    size_t len, cap;
} fs_table;

static int
fs_table_add(fs_table *t, long pid, int fd)
{
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        fs_child *items = PyMem_Realloc(t->items, cap * sizeof(fs_child));
        if (items == NULL) {
            return -1;
        }
        t->items = items;
        t->cap = cap;
    }
    t->items[t->len].pid = pid;
    t->items[t->len].fd = fd;
    t->len++;
    return 0;
}

/* Remove pid from the table; its fd, or -1 if it was not there. */
static int
fs_table_pop(fs_table *t, long pid)
{
    for (size_t i = 0; i < t->len; i++) {
        if (t->items[i].pid == pid) {
            int fd = t->items[i].fd;
            t->items[i] = t->items[--t->len];
            return fd;
        }
    }
    return -1;
}

/* Close every status fd and free the table. */
static void
fs_table_close(fs_table *t)
{
    for (size_t i = 0; i < t->len; i++) {
        cmp_fs_close_fds(&t->items[i].fd, 1);
    }
    PyMem_Free(t->items);
    t->items = NULL;
    t->len = t->cap = 0;
}

/* Tell each reaped child's client its exit code. */
static void
fs_report_exits(fs_table *t)
{
    for (;;) {
        long pid = 0;
        int code = 0;
        if (cmp_proc_reap_any(&pid, &code) != 0 || pid == 0) {
            return;
        }
        int fd = fs_table_pop(t, pid);
        if (fd >= 0) {
            (void)cmp_fs_write_signed(fd, code);   /* client may be gone */
            cmp_fs_close_fds(&fd, 1);
        }
    }
}

/* In a new child: drop everything that belongs to the server. */
static void
fs_child_cleanup(fs_table *t, const int *server_fds, int n)
{
    cmp_fs_sigchld_stop();
    cmp_fs_close_fds(server_fds, (size_t)n);
    fs_table_close(t);
}

static PyObject *
fs_child_result(const int *fds, size_t n)
{
    PyObject *rest = PyList_New((Py_ssize_t)(n - 2));
    if (rest == NULL) {
        return NULL;
    }
    for (size_t i = 2; i < n; i++) {
        PyObject *v = PyLong_FromLong(fds[i]);
        if (v == NULL) {
            Py_DECREF(rest);
            return NULL;
        }
        PyList_SET_ITEM(rest, (Py_ssize_t)(i - 2), v);
    }
    return Py_BuildValue("(iN)", fds[0], rest);
}

/* One request on an accepted connection: the handshake, then its fds.
   *n = 0 when the request is dropped (the client sees its connection
   closed); -1 with an exception set when the handshake raised or a signal
   handler did. */
static int
fs_take_request(int conn, PyObject *handshake, int *req, size_t max, size_t *n)
{
    *n = 0;
    int ok = call_handshake(handshake, conn);
    if (ok <= 0) {
        return ok;
    }
    for (;;) {
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = cmp_fs_recv_fds(conn, req, max, n);
        Py_END_ALLOW_THREADS
        if (err != CMP_INTR) {
            if (err != 0) {
                *n = 0;     /* malformed, vanished or too slow */
            }
            return 0;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* forkserver_serve(listener_fd, alive_fd, max_fds, handshake=None,
                    timeout=None)
   Serve fork requests until alive_fd reaches EOF (returns None).  Each
   accepted connection is first given to handshake(fd) (when not None),
   which returns true to go on with the request and false to drop it; an
   exception from it ends the loop.  With a timeout, every read on the
   connection (the handshake's and the fds') gives up after that many
   seconds: a client that stops talking is dropped.  In each forked child this
   returns (data_fd, [fds]) instead: the child's end of its data pipe and
   the fds its client sent after the two pipe ends. */
static PyObject *
forkserver_serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"listener_fd", "alive_fd", "max_fds",
                                        "handshake", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("forkserver_serve", names, 3);
    PyObject *a[5];
    fs_table table = {NULL, 0, 0};
    int sig_r = -1, listener, alive, max_fds;
    int req[CMP_FS_MAX_FDS];
    (void)module;

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_int(a[0], "listener_fd", &listener) < 0 ||
        cmp_arg_int(a[1], "alive_fd", &alive) < 0 ||
        cmp_arg_int(a[2], "max_fds", &max_fds) < 0) {
        return NULL;
    }
    if (listener < 0 || alive < 0 || max_fds < 2 ||
        max_fds > CMP_FS_MAX_FDS - 1) {
        PyErr_SetString(PyExc_ValueError, "bad forkserver_serve arguments");
        return NULL;
    }
    PyObject *handshake = a[3] != NULL ? a[3] : Py_None;
    if (handshake != Py_None && !PyCallable_Check(handshake)) {
        PyErr_SetString(PyExc_TypeError, "handshake must be callable or None");
        return NULL;
    }
    int has_timeout = 0;
    double timeout = -1.0;
    if (a[4] != NULL && cmp_parse_timeout(a[4], &has_timeout, &timeout) < 0) {
        return NULL;
    }
    if (!has_timeout) {
        timeout = -1.0;
    }
    int err = cmp_fs_sigchld_start(&sig_r);
    if (err != 0) {
        return cmp_raise_oserror(err);
    }
    for (;;) {
        cmp_handle_t watched[3] = {alive, sig_r, listener};
        unsigned char ready[3];
        size_t nready = 0;
        Py_BEGIN_ALLOW_THREADS
        err = cmp_io_wait_many(watched, 3, 1.0, ready, &nready);
        Py_END_ALLOW_THREADS
        if (err == CMP_INTR) {
            if (PyErr_CheckSignals() < 0) {
                goto error;
            }
            continue;
        }
        if (err != 0) {
            cmp_raise_oserror(err);
            goto error;
        }
        if (ready[0]) {
            break;      /* no client left: the alive pipe is at EOF */
        }
        if (ready[1]) {
            cmp_fs_drain(sig_r);
            fs_report_exits(&table);
        }
        if (!ready[2]) {
            continue;
        }
        int conn = -1;
        Py_BEGIN_ALLOW_THREADS
        err = cmp_fs_accept(listener, timeout, &conn);
        Py_END_ALLOW_THREADS
        if (err != 0) {
            continue;   /* gone before we got to it: nothing to do */
        }
        size_t n = 0;
        int taken = fs_take_request(conn, handshake, req, (size_t)max_fds + 1,
                                    &n);
        cmp_fs_close_fds(&conn, 1);
        if (taken < 0) {
            goto error;
        }
        if (n < 2 || n > (size_t)max_fds) {
            cmp_fs_close_fds(req, n);   /* the client sees EOF */
            continue;
        }
        long pid = -1;
        PyOS_BeforeFork();
        err = cmp_proc_fork(&pid);
        if (err == 0 && pid == 0) {
            PyOS_AfterFork_Child();
            int server_fds[3] = {listener, alive, req[1]};
            fs_child_cleanup(&table, server_fds, 3);
            return fs_child_result(req, n);
        }
        PyOS_AfterFork_Parent();
        /* Parent: tell the client the pid, then keep its status fd. */
        if (err == 0 && cmp_fs_write_signed(req[1], pid) == 0 &&
            fs_table_add(&table, pid, req[1]) == 0) {
            req[1] = -1;
        }
        cmp_fs_close_fds(req, n);
        if (PyErr_Occurred()) {
            goto error;
        }
    }
    cmp_fs_sigchld_stop();
    fs_table_close(&table);
    Py_RETURN_NONE;
error:
    cmp_fs_sigchld_stop();
    fs_table_close(&table);
    return NULL;
}

#endif /* CMP_POSIX */

static PyMethodDef forkserver_methods[] = {
#ifdef CMP_POSIX
    {"forkserver_send", (PyCFunction)(void (*)(void))forkserver_send,
     METH_FASTCALL | METH_KEYWORDS,
     "forkserver_send(address, fds, handshake=None)\n\n"
     "Send a fork request carrying fds to the forkserver at address;\n"
     "handshake(fd), when given, talks over the connection first."},
    {"forkserver_serve", (PyCFunction)(void (*)(void))forkserver_serve,
     METH_FASTCALL | METH_KEYWORDS,
     "forkserver_serve(listener_fd, alive_fd, max_fds, handshake=None,\n"
     "                 timeout=None)\n\n"
     "The forkserver's request loop.  handshake(fd) vets each request\n"
     "connection; a read on it waits at most timeout seconds.  Returns\n"
     "None when alive_fd reaches EOF; returns (data_fd, fds) in each child\n"
     "it forks."},
#endif
    {NULL, NULL, 0, NULL},
};

int
cmp_forkserver_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, forkserver_methods);
}
