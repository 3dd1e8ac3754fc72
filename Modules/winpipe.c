/*
 * winpipe.c -- Windows named pipes for Python: the two ends of Pipe() and
 * the AF_PIPE family of Listener/Client (connection.py).  The functions
 * exist on Windows only; elsewhere cmp_winpipe_exec() adds nothing, so
 * that `hasattr(_cmultiprocessing, "winpipe_pair")` tells.
 *
 *   winpipe_pair(duplex=True) -> (handle, handle)
 *   winpipe_create(address, first=False, duplex=True) -> handle
 *   winpipe_accept(handle, timeout=None) -> bool
 *   winpipe_connect(address, duplex=True, timeout=None) -> handle
 *   winspawn(executable, cmdline, handles=(), env=None, cwd=None)
 *       -> (process handle, pid)
 *
 * Handles are plain ints, owned by the caller (a Connection takes them).
 * Every wait is made without the GIL in CMP_WAIT_SLICE steps, with the
 * signal handlers run in between, and Ctrl-C also cuts a step short.
 */
#include "cmp.h"
#include "platform/npipe.h"
#include "platform/winspawn.h"

int cmp_winpipe_exec(PyObject *module);   /* (module.c calls it) */

#ifdef CMP_WINDOWS

/* The address as the wide string the system wants (PyMem_Free it). */
static wchar_t *
pipe_name(PyObject *address)
{
    if (!PyUnicode_Check(address)) {
        PyErr_Format(PyExc_TypeError,
                     "a pipe address must be a str, not %.100s",
                     Py_TYPE(address)->tp_name);
        return NULL;
    }
    return PyUnicode_AsWideCharString(address, NULL);
}

/* One slice of winpipe_accept's wait (wait.h's cmp_wait_step). */
static int
accept_step(void *ctx, double slice, int *err)
{
    int connected = 0;
    *err = cmp_npipe_accept(*(HANDLE *)ctx, slice, &connected);
    if (*err != 0 && *err != CMP_INTR) {
        return -1;
    }
    return connected;
}

/* What one slice of winpipe_connect's wait works on. */
typedef struct {
    const wchar_t *name;
    int flags;
    HANDLE h;
} connect_ctx;

static int
connect_step(void *ctx, double slice, int *err)
{
    connect_ctx *c = ctx;
    *err = cmp_npipe_connect(c->name, c->flags, slice, &c->h);
    if (*err == 0) {
        return 1;
    }
    return *err == ERROR_SEM_TIMEOUT || *err == CMP_INTR ? 0 : -1;
}

static PyObject *
winpipe_pair(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    static const char *const names[] = {"duplex"};
    static const cmp_argspec spec = CMP_ARGSPEC("winpipe_pair", names, 0);
    PyObject *a[1];
    int duplex;
    HANDLE ends[2];
    int err;

    (void)module;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_bool(a[0], 1, &duplex) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    err = cmp_npipe_pair(duplex, ends);
    Py_END_ALLOW_THREADS
    if (err != 0) {
        return cmp_raise_oserror(err);
    }
    PyObject *r = Py_BuildValue("(NN)", cmp_handle_to_int(ends[0]),
                                cmp_handle_to_int(ends[1]));
    if (r == NULL) {
        CloseHandle(ends[0]);
        CloseHandle(ends[1]);
    }
    return r;
}

static PyObject *
winpipe_create(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"address", "first", "duplex"};
    static const cmp_argspec spec = CMP_ARGSPEC("winpipe_create", names, 1);
    PyObject *a[3];
    int first, duplex, err;
    HANDLE h = INVALID_HANDLE_VALUE;

    (void)module;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_bool(a[1], 0, &first) < 0 ||
        cmp_arg_bool(a[2], 1, &duplex) < 0) {
        return NULL;
    }
    wchar_t *name = pipe_name(a[0]);
    if (name == NULL) {
        return NULL;
    }
    int flags = (first ? CMP_NPIPE_FIRST : 0) |
                (duplex ? CMP_NPIPE_DUPLEX : 0);
    Py_BEGIN_ALLOW_THREADS
    err = cmp_npipe_create(name, flags, &h);
    Py_END_ALLOW_THREADS
    PyMem_Free(name);
    if (err != 0) {
        return cmp_raise_oserror(err);
    }
    return cmp_handle_to_int(h);
}

static PyObject *
winpipe_accept(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"handle", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("winpipe_accept", names, 1);
    PyObject *a[2];
    HANDLE h;
    cmp_deadline d;

    (void)module;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_handle(a[0], "invalid pipe handle", &h) < 0 ||
        cmp_deadline_parse(a[1], &d) < 0) {
        return NULL;
    }
    int r = cmp_wait_sliced_once(&d, accept_step, &h);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

static PyObject *
winpipe_connect(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"address", "duplex", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("winpipe_connect", names, 1);
    PyObject *a[3];
    int duplex;
    cmp_deadline d;

    (void)module;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_bool(a[1], 1, &duplex) < 0 ||
        cmp_deadline_parse(a[2], &d) < 0) {
        return NULL;
    }
    wchar_t *name = pipe_name(a[0]);
    if (name == NULL) {
        return NULL;
    }
    connect_ctx c = {name, duplex ? CMP_NPIPE_DUPLEX : 0,
                     INVALID_HANDLE_VALUE};
    int r = cmp_wait_sliced_once(&d, connect_step, &c);
    PyMem_Free(name);
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        /* the timeout passed: what the system says of a pipe too busy */
        return cmp_raise_oserror(ERROR_SEM_TIMEOUT);
    }
    return cmp_handle_to_int(c.h);
}

/* An optional str as a wide string (NULL for None; PyMem_Free it). */
static int
optional_wide(PyObject *obj, const char *what, wchar_t **out)
{
    *out = NULL;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str or None, not %.100s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = PyUnicode_AsWideCharString(obj, NULL);
    return *out == NULL ? -1 : 0;
}

/* The environment block: "name=value\0" entries, as a str; the closing
   NUL is added here.  NULL for None. */
static int
environment_block(PyObject *obj, wchar_t **out)
{
    Py_ssize_t len = 0;
    *out = NULL;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "env must be a str or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    wchar_t *text = PyUnicode_AsWideCharString(obj, &len);
    if (text == NULL) {
        return -1;
    }
    if (len > 0 && text[len - 1] != L'\0') {
        PyMem_Free(text);
        PyErr_SetString(PyExc_ValueError,
                        "env: every entry must end with a NUL character");
        return -1;
    }
    wchar_t *block = PyMem_New(wchar_t, (size_t)len + 2);
    if (block == NULL) {
        PyMem_Free(text);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(block, text, (size_t)len * sizeof(wchar_t));
    block[len] = L'\0';       /* the end of the block (an empty one: two) */
    block[len + 1] = L'\0';
    PyMem_Free(text);
    *out = block;
    return 0;
}

static PyObject *
winpipe_spawn(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const names[] = {"executable", "cmdline", "handles",
                                        "env", "cwd"};
    static const cmp_argspec spec = CMP_ARGSPEC("winspawn", names, 2);
    PyObject *a[5];
    wchar_t *exe = NULL, *cmdline = NULL, *env = NULL, *cwd = NULL;
    HANDLE *inherit = NULL;
    PyObject *seq = NULL, *result = NULL;
    Py_ssize_t n = 0;

    (void)module;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (!PyUnicode_Check(a[1])) {
        PyErr_Format(PyExc_TypeError, "cmdline must be a str, not %.100s",
                     Py_TYPE(a[1])->tp_name);
        return NULL;
    }
    if (optional_wide(a[0], "executable", &exe) < 0 ||
        (cmdline = PyUnicode_AsWideCharString(a[1], NULL)) == NULL ||
        environment_block(a[3], &env) < 0 ||
        optional_wide(a[4], "cwd", &cwd) < 0) {
        goto done;
    }
    if (a[2] != NULL && a[2] != Py_None) {
        seq = PySequence_Fast(a[2], "handles must be a sequence of ints");
        if (seq == NULL) {
            goto done;
        }
        n = PySequence_Fast_GET_SIZE(seq);
        inherit = PyMem_New(HANDLE, (size_t)(n > 0 ? n : 1));
        if (inherit == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (cmp_arg_handle(PySequence_Fast_GET_ITEM(seq, i),
                               "invalid handle", &inherit[i]) < 0) {
                goto done;
            }
        }
    }
    cmp_winspawn_request req = {exe, cmdline, inherit, (size_t)n, env, cwd};
    HANDLE process = NULL;
    unsigned long pid = 0;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = cmp_winspawn(&req, &process, &pid);
    Py_END_ALLOW_THREADS
    if (err != 0) {
        cmp_raise_oserror(err);
        goto done;
    }
    result = Py_BuildValue("(Nk)", cmp_handle_to_int(process), pid);
    if (result == NULL) {
        TerminateProcess(process, 1);
        CloseHandle(process);
    }
done:
    Py_XDECREF(seq);
    PyMem_Free(inherit);
    PyMem_Free(exe);
    PyMem_Free(cmdline);
    PyMem_Free(env);
    PyMem_Free(cwd);
    return result;
}

static PyMethodDef winpipe_functions[] = {
    {"winpipe_pair", (PyCFunction)(void (*)(void))winpipe_pair,
     METH_FASTCALL | METH_KEYWORDS,
     "winpipe_pair(duplex=True)\n--\n\n"
     "A connected pair of named-pipe handles (overlapped, message mode); "
     "when not duplex the first only reads and the second only writes."},
    {"winpipe_create", (PyCFunction)(void (*)(void))winpipe_create,
     METH_FASTCALL | METH_KEYWORDS,
     "winpipe_create(address, first=False, duplex=True)\n--\n\n"
     "Create one server instance of the named pipe `address`; with first, "
     "fail if the name is already taken."},
    {"winpipe_accept", (PyCFunction)(void (*)(void))winpipe_accept,
     METH_FASTCALL | METH_KEYWORDS,
     "winpipe_accept(handle, timeout=None)\n--\n\n"
     "Wait for a client to connect to the server instance `handle`; "
     "False when the timeout passed first."},
    {"winpipe_connect", (PyCFunction)(void (*)(void))winpipe_connect,
     METH_FASTCALL | METH_KEYWORDS,
     "winpipe_connect(address, duplex=True, timeout=None)\n--\n\n"
     "Open the client end of the named pipe `address`, waiting while every "
     "instance is busy (OSError ERROR_SEM_TIMEOUT after timeout)."},
    {"winspawn", (PyCFunction)(void (*)(void))winpipe_spawn,
     METH_FASTCALL | METH_KEYWORDS,
     "winspawn(executable, cmdline, handles=(), env=None, cwd=None)\n--\n\n"
     "Start a program with CreateProcessW; exactly `handles` are inherited "
     "(under the same values).  env is a str of 'name=value\\0' entries.  "
     "Returns (process handle, pid); the caller closes the handle."},
    {NULL, NULL, 0, NULL},
};

int
cmp_winpipe_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, winpipe_functions);
}

#else /* !CMP_WINDOWS */

int
cmp_winpipe_exec(PyObject *module)
{
    (void)module;
    return 0;
}

#endif
