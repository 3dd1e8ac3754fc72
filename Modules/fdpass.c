/*
 * fdpass.c -- passing file descriptors between processes over an AF_UNIX
 * stream socket (SCM_RIGHTS), for reduction.sendfds()/recvfds().
 *
 *   sendfds(sock_fd, fds, msg)            -> None
 *   recvfds(sock_fd, maxfds, msgsize=1)   -> (msg, [fd, ...], truncated)
 *
 * The Python layer adds the stdlib's conventions on top (the one-byte
 * message carrying len(fds) % 256, the checks and their exceptions).
 * Received descriptors are close-on-exec, as every new descriptor Python
 * creates.  Windows has no SCM_RIGHTS: there these functions are absent.
 */
#include "cmp.h"

#ifdef CMP_POSIX
#  include <errno.h>

static PyObject *
fdpass_sendfds(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"sock", "fds", "msg"};
    static const cmp_argspec spec = CMP_ARGSPEC("sendfds", names, 3);
    PyObject *a[3];
    int sock;
    (void)module;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_fileno(a[0], "invalid file descriptor", &sock) < 0) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(a[1], "sendfds(): fds must be a "
                                          "sequence of file descriptors");
    if (seq == NULL) {
        return NULL;
    }
    Py_buffer msg = {0};
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *fds = PyMem_New(int, (size_t)n + 1);
    if (fds == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (cmp_arg_handle(PySequence_Fast_GET_ITEM(seq, i),
                           "invalid file descriptor", &fds[i]) < 0) {
            goto done;
        }
    }
    if (PyObject_GetBuffer(a[2], &msg, PyBUF_SIMPLE) < 0) {
        goto done;
    }
    if (msg.len == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "sendfds(): msg must hold at least one byte");
        goto done;
    }
    size_t sent = 0;
    int err;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        err = cmp_io_sendfds(sock, fds, (size_t)n, msg.buf, (size_t)msg.len,
                             &sent);
        Py_END_ALLOW_THREADS
        if (err != CMP_INTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
    }
    if (err != 0) {
        cmp_raise_oserror(err);
        goto done;
    }
    if (sent != (size_t)msg.len) {
        /* The descriptors went with the first byte; the rest is plain. */
        const char *rest = (const char *)msg.buf + sent;
        size_t left = (size_t)msg.len - sent;
        while (left > 0) {
            cmp_iobuf piece = {rest, left};
            Py_BEGIN_ALLOW_THREADS
            err = cmp_io_writev(sock, CMP_IO_KIND_SOCKET, &piece, 1, 0, &sent);
            Py_END_ALLOW_THREADS
            if (err == CMP_INTR) {
                if (PyErr_CheckSignals() < 0) {
                    goto done;
                }
                continue;
            }
            if (err != 0) {
                cmp_raise_oserror(err);
                goto done;
            }
            rest += sent;
            left -= sent;
        }
    }
    result = Py_NewRef(Py_None);
done:
    if (msg.obj != NULL) {
        PyBuffer_Release(&msg);
    }
    PyMem_Free(fds);
    Py_DECREF(seq);
    return result;
}

static void
fdpass_close_all(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        (void)cmp_io_close(fds[i]);
    }
}

/* One slice of recvfds()'s wait (wait.h): wait until the socket is
   readable, then receive; run without the GIL. */
typedef struct {
    cmp_handle_t sock;
    int *fds;
    size_t maxfds, nfds;
    char *msg;
    size_t msgsize, got;
    int truncated;
} recv_step;

static int
recvfds_step(void *ctx, double slice, int *err)
{
    recv_step *st = ctx;
    int ready = 0;
    *err = cmp_io_wait_readable(st->sock, slice, &ready);
    if (*err == 0 && ready) {
        *err = cmp_io_recvfds(st->sock, st->fds, st->maxfds, &st->nfds,
                              st->msg, st->msgsize, &st->got, &st->truncated);
        if (*err == 0) {
            return 1;
        }
    }
    if (*err == 0 || *err == CMP_INTR || *err == CMP_BUSY) {
        return 0;
    }
    return -1;
}

static PyObject *
fdpass_recvfds(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"sock", "maxfds", "msgsize"};
    static const cmp_argspec spec = CMP_ARGSPEC("recvfds", names, 2);
    PyObject *a[3];
    int sock;
    Py_ssize_t maxfds, msgsize;
    (void)module;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_fileno(a[0], "invalid file descriptor", &sock) < 0 ||
        cmp_arg_ssize(a[1], &maxfds) < 0 ||
        cmp_arg_opt_ssize(a[2], 1, &msgsize) < 0) {
        return NULL;
    }
    if (maxfds < 0 || maxfds > 65536) {
        PyErr_SetString(PyExc_ValueError,
                        "recvfds(): maxfds must be between 0 and 65536");
        return NULL;
    }
    if (msgsize < 1 || msgsize > 65536) {
        PyErr_SetString(PyExc_ValueError,
                        "recvfds(): msgsize must be between 1 and 65536");
        return NULL;
    }
    /* the message buffer first: when it cannot be had, its exception is
       the one reported */
    PyObject *msg = PyBytes_FromStringAndSize(NULL, msgsize);
    if (msg == NULL) {
        return NULL;
    }
    int *fds = PyMem_New(int, (size_t)maxfds + 1);
    if (fds == NULL) {
        Py_DECREF(msg);
        return PyErr_NoMemory();
    }
    recv_step st = {
        sock, fds, (size_t)maxfds, 0, PyBytes_AS_STRING(msg), (size_t)msgsize,
        0,    0};
    const cmp_deadline forever = cmp_deadline_in(0, 0.0);
    if (cmp_wait_sliced(&forever, recvfds_step, &st) < 0) {
        goto fail;
    }
    size_t nfds = st.nfds, got = st.got;
    int truncated = st.truncated;
    PyObject *list = PyList_New((Py_ssize_t)nfds);
    if (list == NULL) {
        fdpass_close_all(fds, nfds);
        goto fail;
    }
    for (size_t i = 0; i < nfds; i++) {
        PyObject *v = PyLong_FromLong(fds[i]);
        if (v == NULL) {
            fdpass_close_all(fds + i, nfds - i);
            Py_DECREF(list);
            goto fail;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    PyMem_Free(fds);
    PyObject *m = PyBytes_FromStringAndSize(PyBytes_AS_STRING(msg),
                                            (Py_ssize_t)got);
    Py_DECREF(msg);
    if (m == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    return Py_BuildValue("(NNO)", m, list, truncated ? Py_True : Py_False);
fail:
    PyMem_Free(fds);
    Py_DECREF(msg);
    return NULL;
}

static PyMethodDef fdpass_functions[] = {
    {"sendfds", (PyCFunction)(void (*)(void))fdpass_sendfds,
     METH_FASTCALL | METH_KEYWORDS,
     "sendfds(sock, fds, msg)\n--\n\n"
     "Send msg over the AF_UNIX socket sock with the descriptors fds "
     "attached (SCM_RIGHTS)."},
    {"recvfds", (PyCFunction)(void (*)(void))fdpass_recvfds,
     METH_FASTCALL | METH_KEYWORDS,
     "recvfds(sock, maxfds, msgsize=1)\n--\n\n"
     "Receive up to maxfds descriptors and up to msgsize bytes (at least "
     "one); return (msg, fds, truncated).  msg is empty at end of file."},
    {NULL, NULL, 0, NULL},
};

int
cmp_fdpass_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, fdpass_functions);
}

#else /* !CMP_POSIX */

int
cmp_fdpass_exec(PyObject *module)
{
    (void)module;
    return 0;
}

#endif
