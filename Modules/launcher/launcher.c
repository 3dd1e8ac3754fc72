/* launcher/launcher.c -- the portable part of the child launcher (see
   launcher.h): read the options, load libpython, check that it is the
   version this launcher was built for (the PyConfig layout depends on it),
   fill a PyConfig and run the interpreter as the python program would. */
#include "launcher.h"

#include <stdlib.h>
#include <string.h>

/* The functions taken from the library.  The types are the headers' own
   prototypes; the argv/string setters are the bytes ones on POSIX and the
   wide ones on Windows (launcher.h). */
typedef struct {
    void (*init_python_config)(PyConfig *);
    PyStatus (*set_argv)(PyConfig *, Py_ssize_t, cmpl_char *const *);
    PyStatus (*set_string)(PyConfig *, wchar_t **, const cmpl_char *);
    PyStatus (*list_append)(PyWideStringList *, const wchar_t *);
    PyStatus (*initialize_from_config)(const PyConfig *);
    int (*status_exception)(PyStatus);
    void (*exit_status_exception)(PyStatus);
    void (*config_clear)(PyConfig *);
    int (*run_main)(void);
    void (*raw_free)(void *);
    const unsigned long *version;
} cmpl_api;

/* The string options, in the order of the fields they set. */
enum {
    OPT_EXECUTABLE,
    OPT_BASE_EXECUTABLE,
    OPT_PREFIX,
    OPT_EXEC_PREFIX,
    OPT_BASE_PREFIX,
    OPT_BASE_EXEC_PREFIX,
    OPT_STDLIB_DIR,
    OPT_PLATLIBDIR,
    N_OPTS
};

static const cmpl_char *const option_names[N_OPTS] = {
    CMPL_T("--executable="),  CMPL_T("--base-executable="),
    CMPL_T("--prefix="),      CMPL_T("--exec-prefix="),
    CMPL_T("--base-prefix="), CMPL_T("--base-exec-prefix="),
    CMPL_T("--stdlib-dir="),  CMPL_T("--platlibdir="),
};

typedef struct {
    const cmpl_char *libpython;
    const cmpl_char *values[N_OPTS];
    const cmpl_char **paths; /* --path values, npaths of them */
    int npaths;
    int first_arg;           /* argv index of the first python argument */
} cmpl_options;

static size_t
cmpl_len(const cmpl_char *s)
{
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}

/* s without prefix if s starts with it, else NULL. */
static const cmpl_char *
after(const cmpl_char *s, const cmpl_char *prefix)
{
    size_t n = cmpl_len(prefix);
    if (memcmp(s, prefix, n * sizeof(cmpl_char)) != 0) {
        return NULL;
    }
    return s + n;
}

static int
parse_options(int argc, cmpl_char **argv, cmpl_options *o)
{
    memset(o, 0, sizeof(*o));
    o->paths = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*o->paths));
    if (o->paths == NULL) {
        cmpl_error("out of memory", NULL);
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        const cmpl_char *a = argv[i], *v;
        int k;
        if (a[0] == '-' && a[1] == '-' && a[2] == '\0') {
            o->first_arg = i + 1;
            break;
        }
        if ((v = after(a, CMPL_T("--libpython="))) != NULL) {
            o->libpython = v;
            continue;
        }
        if ((v = after(a, CMPL_T("--path="))) != NULL) {
            o->paths[o->npaths++] = v;
            continue;
        }
        for (k = 0; k < N_OPTS; k++) {
            if ((v = after(a, option_names[k])) != NULL) {
                o->values[k] = v;
                break;
            }
        }
        if (k == N_OPTS) {
            cmpl_error("unknown option (started by cmultiprocessing "
                       "only): ",
                       a);
            return -1;
        }
    }
    if (o->first_arg == 0) {
        cmpl_error("missing '--' before the interpreter's arguments", NULL);
        return -1;
    }
    if (o->libpython == NULL || o->libpython[0] == '\0') {
        cmpl_error("missing --libpython=PATH", NULL);
        return -1;
    }
    return 0;
}

#define TAKE(field, name)                                                     \
    do {                                                                      \
        void *p_ = cmpl_symbol(lib, name);                                    \
        if (p_ == NULL) {                                                     \
            cmpl_error("this library has no " name                            \
                       " (not a Python 3.8+ runtime?): ",                     \
                       path);                                                 \
            return -1;                                                        \
        }                                                                     \
        memcpy(&api->field, &p_, sizeof(p_));                                 \
    } while (0)

static int
take_api(void *lib, const cmpl_char *path, cmpl_api *api)
{
    void *version;
    TAKE(init_python_config, "PyConfig_InitPythonConfig");
    TAKE(set_argv, CMPL_SET_ARGV);
    TAKE(set_string, CMPL_SET_STRING);
    TAKE(list_append, "PyWideStringList_Append");
    TAKE(initialize_from_config, "Py_InitializeFromConfig");
    TAKE(status_exception, "PyStatus_Exception");
    TAKE(exit_status_exception, "Py_ExitStatusException");
    TAKE(config_clear, "PyConfig_Clear");
    TAKE(run_main, "Py_RunMain");
    TAKE(raw_free, "PyMem_RawFree");
    version = cmpl_symbol(lib, "Py_Version");
    if (version == NULL) {
        char text[160];
        snprintf(text, sizeof(text),
                 "the library is a Python before 3.11 (it has no "
                 "Py_Version), this launcher is for Python %d.%d: ",
                 PY_MAJOR_VERSION, PY_MINOR_VERSION);
        cmpl_error(text, path);
        return 1;
    }
    api->version = (const unsigned long *)version;
    /* Major and minor must be those of the headers the launcher was built
       with: PyConfig's layout changes between them. */
    if ((*api->version >> 16) != ((unsigned long)PY_VERSION_HEX >> 16)) {
        char text[160];
        snprintf(text, sizeof(text),
                 "the library is Python %lu.%lu, this launcher is for "
                 "Python %d.%d: ",
                 (*api->version >> 24) & 0xff, (*api->version >> 16) & 0xff,
                 PY_MAJOR_VERSION, PY_MINOR_VERSION);
        cmpl_error(text, path);
        return 1;
    }
    return 0;
}

#undef TAKE

/* PyConfig's string fields, in the order of the options. */
static wchar_t **
config_field(PyConfig *config, int k)
{
    switch (k) {
    case OPT_EXECUTABLE:
        return &config->executable;
    case OPT_BASE_EXECUTABLE:
        return &config->base_executable;
    case OPT_PREFIX:
        return &config->prefix;
    case OPT_EXEC_PREFIX:
        return &config->exec_prefix;
    case OPT_BASE_PREFIX:
        return &config->base_prefix;
    case OPT_BASE_EXEC_PREFIX:
        return &config->base_exec_prefix;
    case OPT_STDLIB_DIR:
        return &config->stdlib_dir;
    case OPT_PLATLIBDIR:
        return &config->platlibdir;
    }
    return NULL;
}

static PyStatus
configure(const cmpl_api *api, PyConfig *config, const cmpl_options *o,
          int argc, cmpl_char **argv)
{
    PyStatus status;
    /* The interpreter sees the launcher as argv[0], then its own
       arguments, exactly as the python program would get them. */
    cmpl_char **args = calloc((size_t)(argc - o->first_arg + 2),
                              sizeof(*args));
    Py_ssize_t n = 0;
    if (args == NULL) {
        cmpl_error("out of memory", NULL);
        exit(CMPL_EXIT_LOAD);
    }
    args[n++] = argv[0];
    for (int i = o->first_arg; i < argc; i++) {
        args[n++] = argv[i];
    }
    /* Setting argv pre-initialises the runtime (locale, UTF-8 mode from
       -X utf8 and the environment) before any string is decoded. */
    status = api->set_argv(config, n, args);
    free(args);
    if (api->status_exception(status)) {
        return status;
    }
    for (int k = 0; k < N_OPTS; k++) {
        if (o->values[k] == NULL) {
            continue;
        }
        status = api->set_string(config, config_field(config, k),
                                 o->values[k]);
        if (api->status_exception(status)) {
            return status;
        }
    }
    for (int i = 0; i < o->npaths; i++) {
        wchar_t *wide = NULL;
        status = api->set_string(config, &wide, o->paths[i]);
        if (!api->status_exception(status)) {
            status = api->list_append(&config->module_search_paths, wide);
        }
        api->raw_free(wide);
        if (api->status_exception(status)) {
            return status;
        }
    }
    if (o->npaths > 0) {
        config->module_search_paths_set = 1;
    }
    return api->initialize_from_config(config);
}

int
cmpl_main(int argc, cmpl_char **argv)
{
    cmpl_options o;
    cmpl_api api;
    PyConfig config;
    PyStatus status;
    void *lib;
    int r;

    if (parse_options(argc, argv, &o) < 0) {
        return CMPL_EXIT_USAGE;
    }
    lib = cmpl_load(o.libpython);
    if (lib == NULL) {
        return CMPL_EXIT_LOAD;
    }
    r = take_api(lib, o.libpython, &api);
    if (r != 0) {
        return r < 0 ? CMPL_EXIT_LOAD : CMPL_EXIT_USAGE;
    }
    api.init_python_config(&config);
    status = configure(&api, &config, &o, argc, argv);
    api.config_clear(&config);
    free((void *)o.paths);
    if (api.status_exception(status)) {
        api.exit_status_exception(status);   /* prints, exits */
        return 1;
    }
    return api.run_main();
}
