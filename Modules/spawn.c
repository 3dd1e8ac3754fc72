/*
 * spawn.c -- starting fresh interpreters for the spawn and forkserver start
 * methods and for the resource tracker.
 *
 *   spawnv_passfds(path, args, passfds) -> pid
 *       Run the program path with the argument list args in a child process
 *       in which exactly the descriptors passfds (plus 0, 1 and 2) are open.
 *       A failed exec raises OSError (with the child's errno) in the caller.
 *   compile_main(source, filename) -> code
 *       compile() of a spawned child's main script, minus the AST classes.
 *   forkserver_send(address, fds, handshake=None)
 *   forkserver_serve(listener_fd, alive_fd, max_fds, handshake=None,
 *                    timeout=None)
 *       The two ends of a forkserver request.  The loop is native; only
 *       the handshake on each request connection (authentication, see
 *       forkserver.py) calls back into Python, with the GIL held.
 *
 * The OS work is in platform/posix_spawn.c (darwin_spawn.c on macOS).
 */
#include "cmp.h"
#include "platform/spawn.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef CMP_POSIX

static int
compare_ints(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* passfds -> a sorted array of distinct open descriptors (PyMem). */
static int *
fds_from_iterable(PyObject *obj, size_t *count)
{
    PyObject *seq = PySequence_Fast(obj, "passfds must be a sequence of "
                                         "file descriptors");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *fds = PyMem_New(int, n > 0 ? n : 1);
    if (fds == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyLong_Check(item)) {
            PyErr_Format(PyExc_TypeError,
                         "passfds items must be int, not %.100s",
                         Py_TYPE(item)->tp_name);
            goto error;
        }
        long v = PyLong_AsLong(item);
        if (v == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (v < 0 || v > INT_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "bad file descriptor in passfds: %ld", v);
            goto error;
        }
        fds[i] = (int)v;
    }
    Py_DECREF(seq);
    qsort(fds, (size_t)n, sizeof(int), compare_ints);
    size_t kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (kept == 0 || fds[kept - 1] != fds[i]) {
            fds[kept++] = fds[i];
        }
    }
    for (size_t i = 0; i < kept; i++) {
        int err = cmp_spawn_check_fd(fds[i]);
        if (err != 0) {
            errno = err;
            PyObject *num = PyLong_FromLong(fds[i]);
            if (num != NULL) {
                PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, num);
                Py_DECREF(num);
            }
            PyMem_Free(fds);
            return NULL;
        }
    }
    *count = kept;
    return fds;
error:
    Py_DECREF(seq);
    PyMem_Free(fds);
    return NULL;
}

static PyObject *
spawnv_passfds(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"path", "args", "passfds"};
    static const cmp_argspec spec = CMP_ARGSPEC("spawnv_passfds", names, 3);
    PyObject *a[3];
    PyObject *path = NULL, *seq = NULL, *argbytes = NULL, *result = NULL;
    char **argv = NULL;
    int *fds = NULL;
    size_t nfds = 0;
    (void)module;

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (!PyUnicode_FSConverter(a[0], &path)) {
        return NULL;
    }
    seq = PySequence_Fast(a[1], "args must be a sequence of str or bytes");
    if (seq == NULL) {
        goto done;
    }
    Py_ssize_t argc = PySequence_Fast_GET_SIZE(seq);
    if (argc < 1) {
        PyErr_SetString(PyExc_ValueError, "args must not be empty");
        goto done;
    }
    argbytes = PyList_New(argc);
    argv = PyMem_New(char *, argc + 1);
    if (argbytes == NULL || argv == NULL) {
        if (argv == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    for (Py_ssize_t i = 0; i < argc; i++) {
        PyObject *b = NULL;
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(seq, i), &b)) {
            goto done;
        }
        PyList_SET_ITEM(argbytes, i, b);
        argv[i] = PyBytes_AS_STRING(b);
    }
    argv[argc] = NULL;
    fds = fds_from_iterable(a[2], &nfds);
    if (fds == NULL) {
        goto done;
    }

    cmp_spawn_request req = {
        .path = PyBytes_AS_STRING(path),
        .argv = argv,
        .keep_fds = fds,
        .n_keep = nfds,
    };
    long pid = -1;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = cmp_spawn_fork_exec(&req, &pid);
    Py_END_ALLOW_THREADS
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, a[0]);
        goto done;
    }
    result = PyLong_FromLong(pid);
done:
    PyMem_Free(fds);
    PyMem_Free(argv);
    Py_XDECREF(argbytes);
    Py_XDECREF(seq);
    Py_XDECREF(path);
    return result;
}

/* ---- forkserver ---- */

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
        if (cmp_fs_reap(&pid, &code) != 0 || pid == 0) {
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
fs_take_request(int conn, PyObject *handshake, int *req, size_t max,
                size_t *n)
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
        if (err != EINTR) {
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
    if (a[4] != NULL &&
        cmp_parse_timeout(a[4], &has_timeout, &timeout) < 0) {
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
        int watched[3] = {alive, sig_r, listener};
        int ready[3];
        Py_BEGIN_ALLOW_THREADS
        err = cmp_fs_poll(watched, ready, 3, 1.0);
        Py_END_ALLOW_THREADS
        if (err == EINTR) {
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
        int taken = fs_take_request(conn, handshake, req,
                                    (size_t)max_fds + 1, &n);
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

/* compile_main(source, filename) -> code
   What compile(source, filename, 'exec', dont_inherit=True) returns, for the
   main script a spawned child runs again.  The builtin first asks whether
   source is an AST object, which makes the interpreter build its ~120 AST
   classes: a tenth of the work of a whole child start. */
static PyObject *
compile_main(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "compile_main() takes exactly 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *source = args[0], *filename = args[1];
    if (!PyBytes_Check(source)) {
        PyErr_Format(PyExc_TypeError,
                     "compile_main() source must be bytes, not %.100s",
                     Py_TYPE(source)->tp_name);
        return NULL;
    }
    if (!PyUnicode_Check(filename)) {
        PyErr_Format(PyExc_TypeError,
                     "compile_main() filename must be str, not %.100s",
                     Py_TYPE(filename)->tp_name);
        return NULL;
    }
    const char *text = PyBytes_AS_STRING(source);
    if (strlen(text) != (size_t)PyBytes_GET_SIZE(source)) {
        /* compile() of the same version says the same */
#if PY_VERSION_HEX >= 0x030C0000
        PyErr_SetString(PyExc_SyntaxError,
                        "source code string cannot contain null bytes");
#else
        PyErr_SetString(PyExc_ValueError,
                        "source code string cannot contain null bytes");
#endif
        return NULL;
    }
    /* No flags: nothing inherited from the caller's future imports, and the
       coding cookie (or BOM) of the file decides the encoding. */
    return Py_CompileStringObject(text, filename, Py_file_input, NULL, -1);
}

/* runtime_library() -> str or None
   The shared library this interpreter runs from (libpython, the Python
   framework, pythonXY.dll), which the child launcher can load to start a
   child on the same runtime; None when the runtime is linked into the
   program itself. */
static PyObject *
runtime_library(PyObject *module, PyObject *unused)
{
    /* Enough for Windows' longest path in UTF-8, and for any POSIX one. */
    const size_t size = 32768 * 3 + 1;
    char *buf;
    int err, in_program = 0;
    PyObject *result = NULL;
    (void)module;
    (void)unused;
    buf = PyMem_Malloc(size);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    err = cmp_spawn_library_of((const void *)&Py_Initialize, buf, size,
                               &in_program);
    if (err != 0) {
        cmp_raise_oserror(err);
    }
    else if (in_program) {
        result = Py_NewRef(Py_None);
    }
    else {
        /* POSIX file-system bytes; UTF-8 on Windows, which is also the
           file-system encoding there. */
        result = PyUnicode_DecodeFSDefault(buf);
    }
    PyMem_Free(buf);
    return result;
}

static PyMethodDef spawn_methods[] = {
    {"runtime_library", runtime_library, METH_NOARGS,
     "runtime_library() -> str or None\n\n"
     "The path of the shared library holding this interpreter's runtime\n"
     "(libpython, the Python framework, pythonXY.dll); None when the\n"
     "runtime is linked into the program statically."},
    {"compile_main", (PyCFunction)(void (*)(void))compile_main, METH_FASTCALL,
     "compile_main(source, filename) -> code\n\n"
     "compile(source, filename, 'exec', dont_inherit=True) for a source\n"
     "file read as bytes, without building the interpreter's AST classes."},
#ifdef CMP_POSIX
    {"spawnv_passfds", (PyCFunction)(void (*)(void))spawnv_passfds,
     METH_FASTCALL | METH_KEYWORDS,
     "spawnv_passfds(path, args, passfds) -> pid\n\n"
     "Start the program path with the argument list args; in the child\n"
     "only the descriptors passfds (and 0, 1, 2) stay open.  Raises\n"
     "OSError with the child's errno if the program cannot be executed."},
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
cmp_spawn_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, spawn_methods);
}
