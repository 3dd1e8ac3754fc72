/*
 * cmp.h -- private declarations shared by the files of _cmultiprocessing.
 *
 * Every concern file (connection.c, semaphore.c, process.c, ...) exposes one
 * entry point, cmp_<concern>_exec(), which module.c calls from the module's
 * Py_mod_exec slot.  It creates the concern's heap types, stores them in the
 * module state and adds them to the module.
 *
 * Module state: every Python object the module holds lives in cmp_state.
 * Fields are listed once in CMP_STATE_FIELDS (an X-macro) so that module.c
 * can traverse and clear them without knowing the concerns.  A concern that
 * needs a new field adds one line in its own section below.
 */
#ifndef CMP_H
#define CMP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "compat.h"
#include "platform/platform.h"
#include "wait.h"

/* X(name): one PyObject * member of the module state. */
#define CMP_STATE_FIELDS(X)                                                   \
    /* module.c: exceptions */                                                \
    X(ProcessError)                                                           \
    X(BufferTooShort)                                                         \
    X(TimeoutError)                                                           \
    X(AuthenticationError)                                                    \
    /* connection.c, pickler.c */                                             \
    X(Connection_type)                                                        \
    X(KeptPickler_type)                                                       \
    X(conn_kept)                                                              \
    X(conn_dumps)                                                             \
    X(conn_loads)                                                             \
    /* semaphore.c */                                                         \
    X(SemLock_type)                                                           \
    X(AbandonedLockWarning)                                                   \
    /* condition.c */                                                         \
    X(CondCore_type)                                                          \
    /* process.c */                                                           \
    /* spawn.c, forkserver.c */                                               \
    /* shmem.c */                                                             \
    X(SharedMemoryHandle_type)                                                \
    /* heap.c */                                                              \
    X(Heap_type)                                                              \
    X(Arena_type)                                                             \
    X(HeapBlock_type)                                                         \
    X(HeapLock_type)                                                          \
    /* queue.c */                                                             \
    X(Queue_type)                                                             \
    X(QueueFeed_type)                                                         \
    X(QueueEmpty)                                                             \
    X(TornMessageError)                                                       \
    X(QueueFull)                                                              \
    X(PickleDumps)                                                            \
    /* pool.c, pool_result.c */                                               \
    X(str_popleft)                                                            \
    X(str_appendleft)                                                         \
    X(ApplyResult_type)                                                       \
    X(job_counter)                                                            \
    X(str__cache)                                                             \
    X(str__set)                                                               \
    /* end */

typedef struct {
#define CMP_DECLARE_FIELD(name) PyObject *name;
    CMP_STATE_FIELDS(CMP_DECLARE_FIELD)
#undef CMP_DECLARE_FIELD
} cmp_state;

/* Module state from the module object. */
static inline cmp_state *
cmp_get_state(PyObject *module)
{
    void *state = PyModule_GetState(module);
    assert(state != NULL);
    return (cmp_state *)state;
}

/* Module state from a heap type created with PyType_FromModuleAndSpec
   (works for subclasses too, via PyType_GetModuleByDef). */
cmp_state *cmp_state_from_type(PyTypeObject *tp);

extern PyModuleDef cmp_moduledef;

/* Turn a platform error code (an errno value on POSIX, a GetLastError()
   value on Windows) into a Python exception; returns NULL. */
PyObject *cmp_raise_oserror(int code);

/* Parse a Python timeout (None, or a number of seconds) into a deadline-free
   count of seconds: *has_timeout = 0 for None.  Negative counts become 0.
   Returns 0, or -1 with an exception set. */
int cmp_parse_timeout(PyObject *obj, int *has_timeout, double *seconds);

/* ---- args.c: the shared argument parser and converters ---------------- */

/* The parameters of one function: `nnames` names, the first `nrequired`
   of which must be given; every one may be passed by position or by
   keyword.  Build it with CMP_ARGSPEC from a static array of names. */
typedef struct {
    const char *fname;
    const char *const *names;
    Py_ssize_t nnames;
    Py_ssize_t nrequired;
} cmp_argspec;

#define CMP_ARGSPEC(fname, names, nrequired)                                  \
    {(fname), (names), (Py_ssize_t)(sizeof(names) / sizeof((names)[0])),      \
     (nrequired)}

/* Bind a METH_FASTCALL | METH_KEYWORDS call to out[0..spec->nnames):
   borrowed references, NULL for parameters not given.  0, or -1 with a
   TypeError worded as CPython's. */
int cmp_parse_args(const cmp_argspec *spec, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames, PyObject **out);

/* The same for a (tuple, dict-or-NULL) call, as tp_new/tp_init get. */
int cmp_parse_tuple(const cmp_argspec *spec, PyObject *args, PyObject *kwds,
                    PyObject **out);

/* The count check of a positional-only METH_FASTCALL function taking
   from `min` to `max` arguments: 0, or -1 with CPython's TypeError. */
int cmp_check_positional(const char *fname, Py_ssize_t nargs, Py_ssize_t min,
                         Py_ssize_t max);

/* An integer (anything with __index__) that fits a C int; `what` names it
   in the TypeError/OverflowError. */
int cmp_arg_int(PyObject *obj, const char *what, int *out);

/* An integer as a Py_ssize_t (OverflowError beyond). */
int cmp_arg_ssize(PyObject *obj, Py_ssize_t *out);

/* The same, or `dflt` for a parameter not given (NULL) or None. */
int cmp_arg_opt_ssize(PyObject *obj, Py_ssize_t dflt, Py_ssize_t *out);

/* A truth value; `dflt` for NULL. */
int cmp_arg_bool(PyObject *obj, int dflt, int *out);

/* A descriptor or handle from an integer (anything with __index__);
   ValueError "<what>: <obj>" when the value cannot be one. */
int cmp_arg_handle(PyObject *obj, const char *what, cmp_handle_t *out);

/* The same, or what obj.fileno() returns (sockets, connections, files);
   TypeError for an object that is neither. */
int cmp_arg_fileno(PyObject *obj, const char *what, cmp_handle_t *out);

/* The Python int of a descriptor or handle (-1 for none). */
PyObject *cmp_handle_to_int(cmp_handle_t h);

/* A list of n items, item i made by item(ctx, i) as a new reference. */
PyObject *cmp_list_of(Py_ssize_t n,
                      PyObject *(*item)(const void *ctx, Py_ssize_t i),
                      const void *ctx);

/* ---- connection.c: shared with the queue ------------------------------ */

/* The Connection `method` is bound to when it is a Connection's own
   fileno() (borrowed: the method keeps it alive), else NULL. */
PyObject *cmp_conn_of_fileno(PyObject *method);

/* That Connection's handle, without a call (0), or OSError "handle is
   closed" as fileno() raises (-1). */
int cmp_conn_handle(PyObject *conn, cmp_handle_t *out);

/* ---- shmem.c: shared with heap.c ------------------------------------- */

/* The buffer protocol over the whole of a mapping (a shared-memory
   segment, a heap arena) for its owner object: counts the view in
   *exports; ValueError `unmapped` once the mapping is gone. */
int cmp_mapping_getbuffer(PyObject *owner, const cmp_mapping *m,
                          Py_ssize_t *exports, Py_buffer *view, int flags,
                          const char *unmapped);

/* Per-concern entry points, called in this order by module.c. */
int cmp_connection_exec(PyObject *module);
int cmp_fdpass_exec(PyObject *module);
int cmp_semaphore_exec(PyObject *module);
int cmp_condition_exec(PyObject *module);
int cmp_process_exec(PyObject *module);
int cmp_spawn_exec(PyObject *module);
int cmp_forkserver_exec(PyObject *module);
int cmp_shmem_exec(PyObject *module);
int cmp_heap_exec(PyObject *module);
int cmp_queue_exec(PyObject *module);
int cmp_pool_exec(PyObject *module);
int cmp_pool_result_exec(PyObject *module);
int cmp_winpipe_exec(PyObject *module);
int cmp_spin_exec(PyObject *module);

#endif /* CMP_H */
