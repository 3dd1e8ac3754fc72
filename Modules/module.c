/*
 * module.c -- _cmultiprocessing: module definition (PEP 489 multi-phase
 * init), module state, exceptions and the helpers every concern shares.
 *
 * The concerns themselves (connections, semaphores, processes, shared
 * memory, ...) live in their own files; each exposes cmp_<concern>_exec(),
 * called from cmp_exec() below.
 */
#include "cmp.h"

#include <errno.h>
#include <math.h>

cmp_state *
cmp_state_from_type(PyTypeObject *tp)
{
    PyObject *module = PyType_GetModuleByDef(tp, &cmp_moduledef);
    if (module == NULL) {
        return NULL;
    }
    return cmp_get_state(module);
}

PyObject *
cmp_raise_oserror(int code)
{
#ifdef CMP_WINDOWS
    return PyErr_SetFromWindowsErr(code);
#else
    errno = code;
    return PyErr_SetFromErrno(PyExc_OSError);
#endif
}

int
cmp_parse_timeout(PyObject *obj, int *has_timeout, double *seconds)
{
    if (obj == NULL || obj == Py_None) {
        *has_timeout = 0;
        *seconds = 0.0;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    *has_timeout = 1;
    *seconds = t < 0.0 ? 0.0 : t;
    return 0;
}

/* The exception hierarchy of multiprocessing.context, created here so that
   the C types can raise them. */
static int
add_exceptions(PyObject *module, cmp_state *st)
{
    st->ProcessError = PyErr_NewExceptionWithDoc(
        "cmultiprocessing.context.ProcessError",
        "Base class of the errors raised by cmultiprocessing.",
        PyExc_Exception, NULL);
    if (st->ProcessError == NULL) {
        return -1;
    }
    st->BufferTooShort = PyErr_NewExceptionWithDoc(
        "cmultiprocessing.context.BufferTooShort",
        "recv_bytes_into() was given a buffer too small for the message; "
        "args[0] holds the whole message as bytes.",
        st->ProcessError, NULL);
    if (st->BufferTooShort == NULL) {
        return -1;
    }
    st->TimeoutError = PyErr_NewExceptionWithDoc(
        "cmultiprocessing.context.TimeoutError",
        "An operation did not finish before its timeout.", st->ProcessError,
        NULL);
    if (st->TimeoutError == NULL) {
        return -1;
    }
    st->AuthenticationError = PyErr_NewExceptionWithDoc(
        "cmultiprocessing.context.AuthenticationError",
        "The peer failed the authentication handshake.", st->ProcessError,
        NULL);
    if (st->AuthenticationError == NULL) {
        return -1;
    }
    /* Not the stdlib's: its locks never pass from a dead holder. */
    st->AbandonedLockWarning = PyErr_NewExceptionWithDoc(
        "cmultiprocessing.synchronize.AbandonedLockWarning",
        "A Lock or RLock was taken over from a process that ended while "
        "holding it (the stdlib's would stay locked for ever); what it "
        "guards may be half-updated.  Make it an error with the warnings "
        "filter: the lock then stays abandoned and the next acquirer is "
        "told as well.",
        PyExc_RuntimeWarning, NULL);
    if (st->AbandonedLockWarning == NULL) {
        return -1;
    }
    st->TornMessageError = PyErr_NewExceptionWithDoc(
        "cmultiprocessing.queues.TornMessageError",
        "A queue's message was cut off: the process writing it ended in the "
        "middle (queue_robust.c).  Raised by the get() that met it, once; "
        "the queue goes on with the next message.",
        st->ProcessError, NULL);
    if (st->TornMessageError == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "AbandonedLockWarning",
                              st->AbandonedLockWarning) < 0 ||
        PyModule_AddObjectRef(module, "TornMessageError",
                              st->TornMessageError) < 0 ||
        PyModule_AddObjectRef(module, "ProcessError", st->ProcessError) < 0 ||
        PyModule_AddObjectRef(module, "BufferTooShort", st->BufferTooShort) <
            0 ||
        PyModule_AddObjectRef(module, "TimeoutError", st->TimeoutError) < 0 ||
        PyModule_AddObjectRef(module, "AuthenticationError",
                              st->AuthenticationError) < 0) {
        return -1;
    }
    return 0;
}

static int
cmp_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    if (add_exceptions(module, st) < 0) {
        return -1;
    }
    if (cmp_connection_exec(module) < 0 || cmp_fdpass_exec(module) < 0 ||
        cmp_semaphore_exec(module) < 0 || cmp_condition_exec(module) < 0 ||
        cmp_process_exec(module) < 0 || cmp_spawn_exec(module) < 0 ||
        cmp_forkserver_exec(module) < 0 || cmp_shmem_exec(module) < 0 ||
        cmp_heap_exec(module) < 0 || cmp_queue_exec(module) < 0 ||
        cmp_pool_exec(module) < 0 || cmp_pool_result_exec(module) < 0 ||
        cmp_winpipe_exec(module) < 0 || cmp_spin_exec(module) < 0) {
        return -1;
    }
    return 0;
}

static int
cmp_traverse(PyObject *module, visitproc visit, void *arg)
{
    cmp_state *st = cmp_get_state(module);
#define CMP_VISIT_FIELD(name) Py_VISIT(st->name);
    CMP_STATE_FIELDS(CMP_VISIT_FIELD)
#undef CMP_VISIT_FIELD
    return 0;
}

static int
cmp_clear(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
#define CMP_CLEAR_FIELD(name) Py_CLEAR(st->name);
    CMP_STATE_FIELDS(CMP_CLEAR_FIELD)
#undef CMP_CLEAR_FIELD
    return 0;
}

static void
cmp_free(void *module)
{
    (void)cmp_clear((PyObject *)module);
}

static PyModuleDef_Slot cmp_slots[] = {
    {Py_mod_exec, cmp_exec},
#if defined(Py_MOD_PER_INTERPRETER_GIL_SUPPORTED)
    /* State per module object, heap types, no Python object in a C
       global; the C values the interpreters share are behind
       cmp_process_lock().  So interpreters with a GIL of their own
       (concurrent.futures.InterpreterPoolExecutor's) can load it, and the
       alias gives them cmultiprocessing as it gives the main one. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#elif defined(Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED)
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#ifdef Py_MOD_GIL_USED
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyModuleDef cmp_moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cmultiprocessing",
    .m_doc = "Native core of cmultiprocessing: connections, semaphores, "
             "processes, shared memory and heap arenas.",
    .m_size = sizeof(cmp_state),
    .m_slots = cmp_slots,
    .m_traverse = cmp_traverse,
    .m_clear = cmp_clear,
    .m_free = cmp_free,
};

PyMODINIT_FUNC
PyInit__cmultiprocessing(void)
{
    return PyModuleDef_Init(&cmp_moduledef);
}
