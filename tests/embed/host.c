/* tests/embed/host.c -- a program that embeds Python the plain way, as LLDB
   and editors do: linked against the shared libpython, Py_Initialize() with
   no program name and no configuration, so sys.executable is whatever the
   interpreter derives (often the first python3 on PATH, or nothing).

       host CHECK_DIR SITE_DIR REPORT

   puts SITE_DIR (where cmultiprocessing is installed) and CHECK_DIR (the
   folder of tests/lldb/check.py) first on sys.path, runs
   check.write_report(REPORT) and exits 0 when the report passed, 1 when it
   did not, 2 on bad usage, 3 when Python raised. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>

static const char code[] =
    "import sys\n"
    "sys.path[0:0] = [site_dir, check_dir]\n"
    "import check\n"
    "ok = check.write_report(report)\n";

static int
set_path(PyObject *globals, const char *name, const char *value)
{
    PyObject *text = PyUnicode_DecodeFSDefault(value);
    int err;
    if (text == NULL) {
        return -1;
    }
    err = PyDict_SetItemString(globals, name, text);
    Py_DECREF(text);
    return err;
}

int
main(int argc, char **argv)
{
    PyObject *main_module, *globals, *result, *ok;
    int status = 3;

    if (argc != 4) {
        fprintf(stderr, "usage: %s CHECK_DIR SITE_DIR REPORT\n", argv[0]);
        return 2;
    }
    Py_Initialize();
    main_module = PyImport_AddModule("__main__");    /* borrowed */
    if (main_module == NULL) {
        goto error;
    }
    globals = PyModule_GetDict(main_module);          /* borrowed */
    if (set_path(globals, "check_dir", argv[1]) < 0 ||
        set_path(globals, "site_dir", argv[2]) < 0 ||
        set_path(globals, "report", argv[3]) < 0) {
        goto error;
    }
    result = PyRun_String(code, Py_file_input, globals, globals);
    if (result == NULL) {
        goto error;
    }
    Py_DECREF(result);
    ok = PyDict_GetItemString(globals, "ok");         /* borrowed */
    status = (ok != NULL && PyObject_IsTrue(ok) == 1) ? 0 : 1;
    goto done;
error:
    PyErr_Print();
done:
    if (Py_FinalizeEx() < 0 && status == 0) {
        status = 3;
    }
    return status;
}
