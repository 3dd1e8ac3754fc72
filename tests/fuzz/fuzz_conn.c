/*
 * fuzz_conn.c -- libFuzzer harness for the Connection frame reader, the
 * authentication handshake and the queue's message decoder.
 *
 * The interpreter is embedded; _cmultiprocessing, compiled from Modules/
 * with the same sanitizers, is registered as a built-in module before
 * start-up, so `import _cmultiprocessing` (and the cmultiprocessing package
 * from Lib/) use the instrumented code.  Each input is handed as bytes to
 * one function of tests/fuzz/fuzz_targets.py, chosen at build time with
 * -DFUZZ_TARGET="conn", "handshake" or "queue"; that function raises only
 * when something is wrong (an exception outside the allowed set, or a
 * result its reference decoder disagrees with), and then this file prints
 * the traceback and aborts, which libFuzzer records as a crash.
 *
 * Built by tools/fuzz.sh, which passes -DFUZZ_LIBDIR and -DFUZZ_HERE.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_TARGET
#  error "build with -DFUZZ_TARGET=\"conn\", \"handshake\" or \"queue\""
#endif
#if !defined(FUZZ_LIBDIR) || !defined(FUZZ_HERE)
#  error "build with -DFUZZ_LIBDIR=<repo>/Lib and -DFUZZ_HERE=<repo>/tests/fuzz"
#endif

PyMODINIT_FUNC PyInit__cmultiprocessing(void);

static PyObject *target;    /* the fuzz_targets function, for ever */

/* Python-level coverage: the handshake is Python code that the compiler's
   counters cannot see.  fuzz_targets.py asks sys.monitoring (3.12+) for
   LINE events of the handshake's functions and points them at
   _fuzzcov.line(code, line), which bumps one of these counters; libFuzzer
   reads the section as extra coverage features. */
#define FUZZ_EXTRA 8192
__attribute__((section("__libfuzzer_extra_counters"), used))
static uint8_t extra_counters[FUZZ_EXTRA];

static PyObject *
fuzzcov_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "line(code, line_number)");
        return NULL;
    }
    size_t line = PyLong_AsSize_t(args[1]);
    if (line == (size_t)-1 && PyErr_Occurred()) {
        return NULL;
    }
    uint64_t h = ((uint64_t)(uintptr_t)args[0] >> 4) * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)line * 0xC2B2AE3D27D4EB4Full;
    uint8_t *c = &extra_counters[(h >> 20) % FUZZ_EXTRA];
    if (*c != 255) {
        (*c)++;
    }
    Py_RETURN_NONE;
}

static PyMethodDef fuzzcov_methods[] = {
    {"line", (PyCFunction)(void (*)(void))fuzzcov_line, METH_FASTCALL,
     "line(code, line_number): count one executed line."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fuzzcov_def = {
    PyModuleDef_HEAD_INIT, "_fuzzcov", NULL, 0, fuzzcov_methods,
    NULL, NULL, NULL, NULL,
};

static PyObject *
PyInit__fuzzcov(void)
{
    return PyModule_Create(&fuzzcov_def);
}

static void
fail(const char *what)
{
    fprintf(stderr, "fuzz harness: %s\n", what);
    if (PyErr_Occurred()) {
        PyErr_Print();
    }
    fflush(stderr);
    abort();
}

static void
start_python(void)
{
    if (PyImport_AppendInittab("_cmultiprocessing",
                               PyInit__cmultiprocessing) < 0 ||
        PyImport_AppendInittab("_fuzzcov", PyInit__fuzzcov) < 0) {
        fail("cannot register the built-in modules");
    }
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;
    config.install_signal_handlers = 1;   /* SIGPIPE ignored, as python */
    config.site_import = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.program_name,
                                              "fuzz_" FUZZ_TARGET);
    if (!PyStatus_Exception(status)) {
        status = Py_InitializeFromConfig(&config);
    }
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        Py_ExitStatusException(status);
    }

    PyObject *path = PySys_GetObject("path");     /* borrowed */
    PyObject *lib = PyUnicode_FromString(FUZZ_LIBDIR);
    PyObject *here = PyUnicode_FromString(FUZZ_HERE);
    if (path == NULL || lib == NULL || here == NULL ||
        PyList_Insert(path, 0, lib) < 0 || PyList_Insert(path, 0, here) < 0) {
        fail("cannot set sys.path");
    }
    Py_DECREF(lib);
    Py_DECREF(here);

    PyObject *mod = PyImport_ImportModule("fuzz_targets");
    if (mod == NULL) {
        fail("cannot import fuzz_targets");
    }
    PyObject *table = PyObject_GetAttrString(mod, "TARGETS");
    Py_DECREF(mod);
    if (table == NULL) {
        fail("fuzz_targets has no TARGETS");
    }
    target = PyDict_GetItemString(table, FUZZ_TARGET);   /* borrowed */
    if (target == NULL) {
        fail("no such target in fuzz_targets.TARGETS: " FUZZ_TARGET);
    }
    Py_INCREF(target);
    Py_DECREF(table);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    start_python();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PyObject *arg = PyBytes_FromStringAndSize((const char *)data,
                                              (Py_ssize_t)size);
    if (arg == NULL) {
        fail("cannot make the input bytes");
    }
    PyObject *r = PyObject_CallOneArg(target, arg);
    Py_DECREF(arg);
    if (r == NULL) {
        fail("the target raised (traceback below)");
    }
    Py_DECREF(r);
    return 0;
}
