/*
 * spawn.c -- starting fresh interpreters for the spawn and forkserver start
 * methods and for the resource tracker.
 *
 *   spawnv_passfds(path, args, passfds) -> pid
 *       Run the program path with the argument list args in a child process
 *       in which exactly the descriptors passfds (plus 0, 1 and 2) are open.
 *       A failed exec raises OSError (with the child's errno) in the caller.
 *
 * The OS work is in platform/posix_spawn.c (darwin_spawn.c on macOS).
 */
#include "cmp.h"
#include "platform/spawn.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#ifdef CMP_POSIX

/* A small positional-or-keyword parser for METH_FASTCALL|METH_KEYWORDS:
   every parameter is required.  Fills out[0..n-1] with borrowed refs. */
static int
take_args(const char *fname, const char *const *names, Py_ssize_t n,
          PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
          PyObject **out)
{
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes %zd positional arguments but %zd were given",
                     fname, n, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t slot = -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                slot = i;
                break;
            }
        }
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         fname, key);
            return -1;
        }
        if (out[slot] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'",
                         fname, names[slot]);
            return -1;
        }
        out[slot] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

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
    PyObject *a[3];
    PyObject *path = NULL, *seq = NULL, *argbytes = NULL, *result = NULL;
    char **argv = NULL;
    int *fds = NULL;
    size_t nfds = 0;
    (void)module;

    if (take_args("spawnv_passfds", names, 3, args, nargs, kwnames, a) < 0) {
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

#endif /* CMP_POSIX */

static PyMethodDef spawn_methods[] = {
#ifdef CMP_POSIX
    {"spawnv_passfds", (PyCFunction)(void (*)(void))spawnv_passfds,
     METH_FASTCALL | METH_KEYWORDS,
     "spawnv_passfds(path, args, passfds) -> pid\n\n"
     "Start the program path with the argument list args; in the child\n"
     "only the descriptors passfds (and 0, 1, 2) stay open.  Raises\n"
     "OSError with the child's errno if the program cannot be executed."},
#endif
    {NULL, NULL, 0, NULL},
};

int
cmp_spawn_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, spawn_methods);
}
