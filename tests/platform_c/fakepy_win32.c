/* tests/platform_c/fakepy_win32.c -- a stand-in for pythonXY.dll, for the
 * wine test of the child launcher (Modules/launcher/, test_launcher.sh).
 *
 * It exports the functions and the data the launcher takes from a real
 * runtime with GetProcAddress(), built against the same Python headers (so
 * PyConfig has the real layout), and records what the launcher gave it:
 * Py_RunMain() writes the argv, the string fields and the module search
 * paths of the configuration that Py_InitializeFromConfig() received, in
 * UTF-8, one "name=value" line each, to the file named by FAKEPY_OUT, and
 * returns FAKEPY_RC (default 0) as the interpreter's exit status.
 *
 * Variants, chosen when it is compiled:
 *   -DFAKEPY_OMIT_RUN_MAIN       no Py_RunMain export (a library that is
 *                                not a Python runtime)
 *   -DFAKEPY_VERSION=0x...       Py_Version other than the headers' own
 * and at run time:
 *   FAKEPY_FAIL_INIT=1           Py_InitializeFromConfig() fails with a
 *                                PyStatus error, which the launcher must
 *                                hand to Py_ExitStatusException().
 */
#define Py_BUILD_CORE 1 /* the PyAPI_ declarations export instead of import */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <windows.h>

#ifndef FAKEPY_VERSION
#  define FAKEPY_VERSION PY_VERSION_HEX
#endif

const unsigned long Py_Version = FAKEPY_VERSION;

static PyStatus
ok_status(void)
{
    PyStatus s;
    memset(&s, 0, sizeof(s));
    return s;
}

static PyStatus
error_status(const char *func, const char *msg)
{
    PyStatus s = ok_status();
    s._type = 1; /* _PyStatus_TYPE_ERROR */
    s.func = func;
    s.err_msg = msg;
    return s;
}

static wchar_t *
copy(const wchar_t *s)
{
    return s ? _wcsdup(s) : NULL;
}

static int
list_append(PyWideStringList *list, const wchar_t *item)
{
    wchar_t **items = realloc(list->items,
                              (size_t)(list->length + 1) * sizeof(*items));
    if (items == NULL) {
        return -1;
    }
    list->items = items;
    list->items[list->length++] = copy(item);
    return 0;
}

static void
list_clear(PyWideStringList *list)
{
    for (Py_ssize_t i = 0; i < list->length; i++) {
        free(list->items[i]);
    }
    free(list->items);
    list->items = NULL;
    list->length = 0;
}

void
PyConfig_InitPythonConfig(PyConfig *config)
{
    memset(config, 0, sizeof(*config));
    config->_config_init = 2; /* _PyConfig_INIT_PYTHON */
    config->module_search_paths_set = 0;
}

PyStatus
PyWideStringList_Append(PyWideStringList *list, const wchar_t *item)
{
    if (item == NULL) {
        return error_status(__func__, "NULL item");
    }
    if (list_append(list, item) < 0) {
        return error_status(__func__, "out of memory");
    }
    return ok_status();
}

PyStatus
PyConfig_SetArgv(PyConfig *config, Py_ssize_t argc, wchar_t *const *argv)
{
    list_clear(&config->argv);
    for (Py_ssize_t i = 0; i < argc; i++) {
        if (list_append(&config->argv, argv[i]) < 0) {
            return error_status(__func__, "out of memory");
        }
    }
    return ok_status();
}

PyStatus
PyConfig_SetString(PyConfig *config, wchar_t **field, const wchar_t *value)
{
    (void)config;
    free(*field);
    *field = copy(value);
    return ok_status();
}

void
PyMem_RawFree(void *p)
{
    free(p);
}

/* The configuration Py_InitializeFromConfig() was given, copied (the
   launcher clears its own before Py_RunMain). */
static PyWideStringList seen_argv, seen_paths;
static wchar_t *seen_strings[8];
static int seen_paths_set = -1;

PyStatus
Py_InitializeFromConfig(const PyConfig *config)
{
    wchar_t *const strings[8] = {
        config->executable,  config->base_executable, config->prefix,
        config->exec_prefix, config->base_prefix,     config->base_exec_prefix,
        config->stdlib_dir,  config->platlibdir,
    };
    const char *fail = getenv("FAKEPY_FAIL_INIT");
    if (fail != NULL && fail[0] == '1') {
        return error_status(__func__, "fakepy: initialisation refused");
    }
    for (Py_ssize_t i = 0; i < config->argv.length; i++) {
        list_append(&seen_argv, config->argv.items[i]);
    }
    for (Py_ssize_t i = 0; i < config->module_search_paths.length; i++) {
        list_append(&seen_paths, config->module_search_paths.items[i]);
    }
    for (int k = 0; k < 8; k++) {
        seen_strings[k] = copy(strings[k]);
    }
    seen_paths_set = config->module_search_paths_set;
    return ok_status();
}

int
PyStatus_Exception(PyStatus status)
{
    return status._type != 0;
}

void
Py_ExitStatusException(PyStatus status)
{
    if (status._type == 2) { /* _PyStatus_TYPE_EXIT */
        exit(status.exitcode);
    }
    fprintf(stderr, "Fatal Python error: %s: %s\n",
            status.func ? status.func : "?",
            status.err_msg ? status.err_msg : "?");
    fflush(stderr);
    exit(1);
}

void
PyConfig_Clear(PyConfig *config)
{
    wchar_t **strings[8] = {
        &config->executable,  &config->base_executable, &config->prefix,
        &config->exec_prefix, &config->base_prefix,     &config->base_exec_prefix,
        &config->stdlib_dir,  &config->platlibdir,
    };
    for (int k = 0; k < 8; k++) {
        free(*strings[k]);
        *strings[k] = NULL;
    }
    list_clear(&config->argv);
    list_clear(&config->module_search_paths);
}

#ifndef FAKEPY_OMIT_RUN_MAIN
static const char *const string_names[8] = {
    "executable",  "base_executable",  "prefix",     "exec_prefix",
    "base_prefix", "base_exec_prefix", "stdlib_dir", "platlibdir",
};

static void
put(FILE *f, const char *name, const wchar_t *value)
{
    char buf[4 * 32768];
    if (value == NULL) {
        fprintf(f, "%s=<unset>\n", name);
        return;
    }
    if (WideCharToMultiByte(CP_UTF8, 0, value, -1, buf, (int)sizeof(buf),
                            NULL, NULL) == 0) {
        fprintf(f, "%s=<not convertible>\n", name);
        return;
    }
    fprintf(f, "%s=%s\n", name, buf);
}

int
Py_RunMain(void)
{
    const wchar_t *out = _wgetenv(L"FAKEPY_OUT");
    const char *rc = getenv("FAKEPY_RC");
    FILE *f;
    if (out == NULL || (f = _wfopen(out, L"wb")) == NULL) {
        fprintf(stderr, "fakepy: cannot write FAKEPY_OUT\n");
        return 120;
    }
    for (Py_ssize_t i = 0; i < seen_argv.length; i++) {
        put(f, "argv", seen_argv.items[i]);
    }
    for (int k = 0; k < 8; k++) {
        put(f, string_names[k], seen_strings[k]);
    }
    fprintf(f, "module_search_paths_set=%d\n", seen_paths_set);
    for (Py_ssize_t i = 0; i < seen_paths.length; i++) {
        put(f, "path", seen_paths.items[i]);
    }
    fclose(f);
    return rc ? atoi(rc) : 0;
}
#endif
