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

#include "platform/platform.h"

/* X(name): one PyObject * member of the module state. */
#define CMP_STATE_FIELDS(X)                                                   \
    /* module.c: exceptions */                                                \
    X(ProcessError)                                                           \
    X(BufferTooShort)                                                         \
    X(TimeoutError)                                                           \
    X(AuthenticationError)                                                    \
    /* connection.c */                                                        \
    X(Connection_type)                                                        \
    X(FrameWriter_type)                                                       \
    X(conn_pickler)                                                           \
    X(conn_loads)                                                             \
    X(conn_str_dump)                                                          \
    X(conn_str_clear_memo)                                                    \
    X(conn_cache)                                                             \
    X(conn_copyreg_table)                                                     \
    X(conn_extra_reducers)                                                    \
    X(conn_str_generation)                                                    \
    /* semaphore.c */                                                         \
    X(SemLock_type)                                                           \
    X(CondCore_type)                                                          \
    /* process.c */                                                           \
    /* spawn.c */                                                             \
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
    X(QueueFull)                                                              \
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

/* Per-concern entry points, called in this order by module.c. */
int cmp_connection_exec(PyObject *module);
int cmp_fdpass_exec(PyObject *module);
int cmp_semaphore_exec(PyObject *module);
int cmp_process_exec(PyObject *module);
int cmp_spawn_exec(PyObject *module);
int cmp_shmem_exec(PyObject *module);
int cmp_heap_exec(PyObject *module);
int cmp_queue_exec(PyObject *module);

#endif /* CMP_H */
