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
 *   runtime_library() -> str or None
 *       The shared library of this interpreter's runtime (for the launcher).
 *
 * The forkserver's request loop is forkserver.c's.  The OS work is in
 * platform/posix_spawn.c (darwin_spawn.c on macOS, win32_spawn.c).
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
    if (cmp_check_positional("compile_main", nargs, 2, 2) < 0) {
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
#endif
    {NULL, NULL, 0, NULL},
};

int
cmp_spawn_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, spawn_methods);
}
