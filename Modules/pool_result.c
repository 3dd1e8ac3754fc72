/*
 * pool_result.c -- ApplyResult, the pending result of one Pool task, and
 * deliver(), which completes a whole batch of results in one call.
 *
 *   ApplyResult(pool, callback, error_callback)
 *       The stdlib's multiprocessing.pool.ApplyResult (and AsyncResult):
 *       ready(), successful(), wait(timeout=None), get(timeout=None), and
 *       the protocol the pool drives it by: _set(i, (ok, value)) stores
 *       the outcome and calls _finish(), which runs the callback that fits
 *       (in the calling thread: the pool's collector), then opens the
 *       result to its waiters, drops it from pool._cache and lets go of
 *       the pool.  _open() opens it without a callback (an empty map()).
 *       MapResult subclasses it in pool.py.
 *   deliver(cache, results)
 *       For each (job, index, ok, value) of results: cache[job]._set(index,
 *       (ok, value)), skipping jobs no longer in the cache; an exception
 *       raised there (a failing callback) goes to sys.excepthook and the
 *       next result is delivered.
 *
 * Why in C: with tiny tasks the parent's Python was the limit of
 * apply_async(): ~4 us of parent CPU a task on the 2-CPU test VM, of which
 * making the Python ApplyResult (its latch: a lock made and taken) took
 * 1.5 us and setting it from the collector 1.5 us.  Here a result costs a
 * C object, and a waiter's gate -- a PyThread lock, held while the result
 * is pending -- is only made when someone waits before the result is in:
 * a get() on a result that is already there takes no lock at all.
 */
#include "cmp.h"

#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *pool;
    PyObject *callback;
    PyObject *error_callback;
    PyObject *cache;
    PyObject *job;
    PyObject *success; /* NULL until set */
    PyObject *value;   /* NULL until set */
    PyObject *dict;
    PyObject *weakrefs;
    /* NULL until a waiter comes; then held for as long as the result is
       pending, released once by _open(); a waiter passes through it
       (acquire, release) so that the next one can pass too */
    PyThread_type_lock gate;
    int ready;
} ResultObject;

/* The object fields, in one list that traverse and clear walk. */
static const Py_ssize_t result_fields[] = {
    offsetof(ResultObject, pool),
    offsetof(ResultObject, callback),
    offsetof(ResultObject, error_callback),
    offsetof(ResultObject, cache),
    offsetof(ResultObject, job),
    offsetof(ResultObject, success),
    offsetof(ResultObject, value),
    offsetof(ResultObject, dict),
};
enum { N_RESULT_FIELDS = (int)(sizeof(result_fields) / sizeof(Py_ssize_t)) };

static PyObject **
result_field(PyObject *op, int i)
{
    return (PyObject **)((char *)op + result_fields[i]);
}

static int
result_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    for (int i = 0; i < N_RESULT_FIELDS; i++) {
        Py_VISIT(*result_field(op, i));
    }
    return 0;
}

static int
result_clear(PyObject *op)
{
    for (int i = 0; i < N_RESULT_FIELDS; i++) {
        Py_CLEAR(*result_field(op, i));
    }
    return 0;
}

static void
result_dealloc(PyObject *op)
{
    ResultObject *r = (ResultObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (r->weakrefs != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    (void)result_clear(op);
    if (r->gate != NULL) {
        /* no waiter can be inside: each holds a reference */
        PyThread_free_lock(r->gate);
        r->gate = NULL;
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int
result_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"pool", "callback", "error_callback"};
    static const cmp_argspec spec = CMP_ARGSPEC("ApplyResult", names, 3);
    ResultObject *r = (ResultObject *)op;
    PyObject *a[3], *cache = NULL, *job = NULL;

    if (cmp_parse_tuple(&spec, args, kwds, a) < 0) {
        return -1;
    }
    cmp_state *st = cmp_state_from_type(Py_TYPE(op));
    if (st == NULL) {
        return -1;
    }
    cache = PyObject_GetAttr(a[0], st->str__cache);
    if (cache == NULL) {
        goto error;
    }
    job = PyIter_Next(st->job_counter);
    if (job == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "the job counter ran out");
        }
        goto error;
    }
    if (PyObject_SetItem(cache, job, op) < 0) {
        goto error;
    }
    Py_XSETREF(r->pool, Py_NewRef(a[0]));
    Py_XSETREF(r->callback, Py_NewRef(a[1]));
    Py_XSETREF(r->error_callback, Py_NewRef(a[2]));
    Py_XSETREF(r->cache, cache);
    Py_XSETREF(r->job, job);
    return 0;
error:
    Py_XDECREF(cache);
    Py_XDECREF(job);
    return -1;
}

/* Open the result to its waiters (once). */
static void
result_open(ResultObject *r)
{
    if (!r->ready) {
        r->ready = 1;
        if (r->gate != NULL) {
            PyThread_release_lock(r->gate);
        }
    }
}

/* cache.pop(job, None) */
static int
cache_discard(PyObject *cache, PyObject *job)
{
    if (PyDict_CheckExact(cache)) {
        PyObject *found = PyDict_GetItemWithError(cache, job);
        if (found == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        return PyDict_DelItem(cache, job);
    }
    PyObject *out = PyObject_CallMethod(cache, "pop", "OO", job, Py_None);
    if (out == NULL) {
        return -1;
    }
    Py_DECREF(out);
    return 0;
}

/* The stdlib's _set tail: run the callback that fits the outcome; then,
   whatever it did, open the result, drop it from the cache and forget the
   pool.  0, or -1 with the callback's (or the cleanup's) exception. */
static int
result_finish(ResultObject *r)
{
    int ok = r->success == NULL ? 0 : PyObject_IsTrue(r->success);
    if (ok >= 0) {
        PyObject *hook = ok ? r->callback : r->error_callback;
        if (hook != NULL && hook != Py_None) {
            Py_INCREF(hook);
            PyObject *out = PyObject_CallOneArg(
                hook, r->value != NULL ? r->value : Py_None);
            Py_DECREF(hook);
            Py_XDECREF(out);
        }
    }
    cmp_saved_exc saved;
    cmp_exc_save(&saved);
    result_open(r);
    PyObject *cache = r->cache, *job = r->job;
    if (cache != NULL && job != NULL) {
        Py_INCREF(cache);
        Py_INCREF(job);
        (void)cache_discard(cache, job);
        Py_DECREF(cache);
        Py_DECREF(job);
    }
    Py_XSETREF(r->pool, Py_NewRef(Py_None));
    cmp_exc_restore_under(&saved);
    return PyErr_Occurred() ? -1 : 0;
}

/* Store `outcome`, an (ok, value) pair, and finish. */
static int
result_set(ResultObject *r, PyObject *outcome)
{
    PyObject *pair = PySequence_Tuple(outcome);
    if (pair == NULL) {
        return -1;
    }
    if (PyTuple_GET_SIZE(pair) != 2) {
        PyErr_Format(PyExc_ValueError,
                     "ApplyResult._set: the outcome must be an (ok, value) "
                     "pair, not %zd items",
                     PyTuple_GET_SIZE(pair));
        Py_DECREF(pair);
        return -1;
    }
    Py_XSETREF(r->success, Py_NewRef(PyTuple_GET_ITEM(pair, 0)));
    Py_XSETREF(r->value, Py_NewRef(PyTuple_GET_ITEM(pair, 1)));
    Py_DECREF(pair);
    return result_finish(r);
}

/* One slice of a wait (wait.h's step), without the GIL: pass through the
   gate once it is open.  A signal ends the slice early (PY_LOCK_INTR), so
   that its handler runs at once. */
static int
gate_step(void *ctx, double slice, int *err)
{
    PyThread_type_lock gate = (PyThread_type_lock)ctx;
    (void)err;
    PY_TIMEOUT_T us = (PY_TIMEOUT_T)(slice * 1e6);
    if (PyThread_acquire_lock_timed(gate, us, 1) == PY_LOCK_ACQUIRED) {
        PyThread_release_lock(gate);
        return 1;
    }
    return 0;
}

/* Wait until the result is in or the deadline passes: 1 if it is in, 0
   if not, -1 with an exception (a signal handler's). */
static int
result_wait_until(ResultObject *r, const cmp_deadline *deadline)
{
    if (r->ready) {
        return 1;
    }
    if (r->gate == NULL) {
        PyThread_type_lock gate = PyThread_allocate_lock();
        if (gate == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        /* closed from now until _open() */
        (void)PyThread_acquire_lock(gate, NOWAIT_LOCK);
        r->gate = gate;
    }
    if (cmp_deadline_passed(deadline)) {
        return r->ready;
    }
    if (cmp_wait_sliced(deadline, gate_step, r->gate) < 0) {
        return -1;
    }
    return r->ready;
}

static int
parse_deadline(const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, cmp_deadline *deadline)
{
    static const char *const names[] = {"timeout"};
    cmp_argspec spec = CMP_ARGSPEC(fname, names, 0);
    PyObject *a[1];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return -1;
    }
    return cmp_deadline_parse(a[0], deadline);
}

static PyObject *
result_ready(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(((ResultObject *)op)->ready);
}

static PyObject *
missing_field(const char *name)
{
    PyErr_Format(PyExc_AttributeError,
                 "'ApplyResult' object has no attribute '%s'", name);
    return NULL;
}

static PyObject *
result_successful(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ResultObject *r = (ResultObject *)op;
    if (!r->ready) {
        PyErr_Format(PyExc_ValueError, "%R not ready", op);
        return NULL;
    }
    if (r->success == NULL) {
        return missing_field("_success");
    }
    return Py_NewRef(r->success);
}

static PyObject *
result_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    cmp_deadline deadline;
    if (parse_deadline("wait", args, nargs, kwnames, &deadline) < 0 ||
        result_wait_until((ResultObject *)op, &deadline) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* `raise value`, as Python would raise it. */
static PyObject *
raise_value(PyObject *value)
{
    if (PyExceptionInstance_Check(value)) {
        PyErr_SetObject((PyObject *)Py_TYPE(value), value);
    }
    else if (PyExceptionClass_Check(value)) {
        PyErr_SetNone(value);
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must derive from BaseException");
    }
    return NULL;
}

static PyObject *
result_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    ResultObject *r = (ResultObject *)op;
    if (!r->ready || nargs > 1 || kwnames != NULL) {
        cmp_deadline deadline;
        if (parse_deadline("get", args, nargs, kwnames, &deadline) < 0) {
            return NULL;
        }
        int got = result_wait_until(r, &deadline);
        if (got < 0) {
            return NULL;
        }
        if (!got) {
            cmp_state *st = cmp_state_from_type(Py_TYPE(op));
            if (st != NULL) {
                PyErr_SetNone(st->TimeoutError);
            }
            return NULL;
        }
    }
    else if (nargs == 1 && args[0] != Py_None) {
        /* a bad timeout fails even when the result is in */
        cmp_deadline unused;
        if (cmp_deadline_parse(args[0], &unused) < 0) {
            return NULL;
        }
    }
    if (r->success == NULL) {
        return missing_field("_success");
    }
    if (r->value == NULL) {
        return missing_field("_value");
    }
    int ok = PyObject_IsTrue(r->success);
    if (ok < 0) {
        return NULL;
    }
    if (ok) {
        return Py_NewRef(r->value);
    }
    return raise_value(r->value);
}

static PyObject *
result_set_method(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (cmp_check_positional("_set", nargs, 2, 2) < 0 ||
        result_set((ResultObject *)op, args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
result_finish_method(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (result_finish((ResultObject *)op) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
result_open_method(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    result_open((ResultObject *)op);
    Py_RETURN_NONE;
}

static PyMethodDef result_methods[] = {
    {"ready", result_ready, METH_NOARGS,
     "ready()\n--\n\nWhether the call has completed."},
    {"successful", result_successful, METH_NOARGS,
     "successful()\n--\n\nWhether the call completed without raising "
     "(ValueError if it has not completed)."},
    {"wait", (PyCFunction)(void (*)(void))result_wait,
     METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nWait until the result is available or "
     "timeout seconds pass."},
    {"get", (PyCFunction)(void (*)(void))result_get,
     METH_FASTCALL | METH_KEYWORDS,
     "get(timeout=None)\n--\n\nThe result when it arrives; its exception "
     "re-raised if the call failed; TimeoutError after timeout seconds."},
    {"_set", (PyCFunction)(void (*)(void))result_set_method, METH_FASTCALL,
     "_set(i, obj)\n--\n\nStore the outcome obj, an (ok, value) pair, then "
     "_finish()."},
    {"_finish", result_finish_method, METH_NOARGS,
     "_finish()\n--\n\nRun the callback that fits the stored outcome, then "
     "wake the waiters, leave the cache and drop the pool."},
    {"_open", result_open_method, METH_NOARGS,
     "_open()\n--\n\nWake the waiters (no callback, the cache untouched)."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "See PEP 585"},
    {NULL, NULL, 0, NULL},
};

/* The fields as attributes, None where unset (a pending result's _value):
   managers.public_methods() reads every attribute dir() lists. */
static PyObject *
field_get(PyObject *op, void *closure)
{
    PyObject *v = *(PyObject **)((char *)op + (Py_ssize_t)closure);
    return Py_NewRef(v != NULL ? v : Py_None);
}

static int
field_set(PyObject *op, PyObject *value, void *closure)
{
    PyObject **slot = (PyObject **)((char *)op + (Py_ssize_t)closure);
    Py_XSETREF(*slot, Py_XNewRef(value));
    return 0;
}

#define RESULT_FIELD(name, member)                                            \
    {name, field_get, field_set, NULL, (void *)offsetof(ResultObject, member)}

static PyGetSetDef result_getset[] = {
    RESULT_FIELD("_pool", pool),
    RESULT_FIELD("_callback", callback),
    RESULT_FIELD("_error_callback", error_callback),
    RESULT_FIELD("_cache", cache),
    RESULT_FIELD("_job", job),
    RESULT_FIELD("_success", success),
    RESULT_FIELD("_value", value),
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef result_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(ResultObject, weakrefs),
     Py_READONLY, NULL},
    {"__dictoffset__", Py_T_PYSSIZET, offsetof(ResultObject, dict),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot result_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, result_init},
    {Py_tp_dealloc, result_dealloc},
    {Py_tp_traverse, result_traverse},
    {Py_tp_clear, result_clear},
    {Py_tp_methods, result_methods},
    {Py_tp_members, result_members},
    {Py_tp_getset, result_getset},
    {Py_tp_doc, "ApplyResult(pool, callback, error_callback)\n--\n\n"
                "The pending result of a task given to a Pool "
                "(apply_async() returns one)."},
    {0, NULL},
};

static PyType_Spec result_spec = {
    /* the class users meet as multiprocessing.pool.ApplyResult */
    .name = "cmultiprocessing.pool.ApplyResult",
    .basicsize = sizeof(ResultObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = result_slots,
};

/* ------------------------------------------------------------------ */
/* deliver(cache, results)                                             */

/* Give the raised exception to sys.excepthook, as the pool's collector
   reports a failing callback.  0, or -1 if the hook itself failed. */
static int
report_to_excepthook(void)
{
    PyObject *exc = cmp_exc_take();
    if (exc == NULL) {
        return 0;
    }
    PyObject *hook = PySys_GetObject("excepthook"); /* borrowed */
    if (hook == NULL || hook == Py_None) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
        PyErr_WriteUnraisable(NULL);
        return 0;
    }
    Py_INCREF(hook);
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *out = PyObject_CallFunctionObjArgs(
        hook, (PyObject *)Py_TYPE(exc), exc, tb != NULL ? tb : Py_None, NULL);
    Py_XDECREF(tb);
    Py_DECREF(hook);
    Py_DECREF(exc);
    if (out == NULL) {
        return -1;
    }
    Py_DECREF(out);
    return 0;
}

/* Deliver one (job, index, ok, value) to its target: 0, or -1 with the
   exception of the target's _set. */
static int
deliver_one(cmp_state *st, PyObject *target, PyObject *item)
{
    PyObject *index = PyTuple_GET_ITEM(item, 1);
    PyObject *ok = PyTuple_GET_ITEM(item, 2);
    PyObject *value = PyTuple_GET_ITEM(item, 3);
    if (Py_IS_TYPE(target, (PyTypeObject *)st->ApplyResult_type)) {
        ResultObject *r = (ResultObject *)target;
        Py_XSETREF(r->success, Py_NewRef(ok));
        Py_XSETREF(r->value, Py_NewRef(value));
        return result_finish(r);
    }
    PyObject *outcome = PyTuple_Pack(2, ok, value);
    if (outcome == NULL) {
        return -1;
    }
    PyObject *out = PyObject_CallMethodObjArgs(target, st->str__set, index,
                                               outcome, NULL);
    Py_DECREF(outcome);
    if (out == NULL) {
        return -1;
    }
    Py_DECREF(out);
    return 0;
}

static PyObject *
deliver_func(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    static const char *const names[] = {"cache", "results"};
    static const cmp_argspec spec = CMP_ARGSPEC("deliver", names, 2);
    PyObject *a[2], *seq = NULL, *result = NULL;
    cmp_state *st = cmp_get_state(module);

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    PyObject *cache = a[0];
    if (!PyDict_Check(cache)) {
        PyErr_Format(PyExc_TypeError,
                     "deliver: cache must be a dict, not %.200s",
                     Py_TYPE(cache)->tp_name);
        return NULL;
    }
    seq = PySequence_Fast(a[1], "deliver: results must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    /* the sequence may change under a callback: index it afresh each time */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
            PyErr_Format(PyExc_TypeError,
                         "deliver: a result must be a (job, index, ok, "
                         "value) tuple, not %.200s",
                         Py_TYPE(item)->tp_name);
            goto done;
        }
        Py_INCREF(item);
        PyObject *target = PyDict_GetItemWithError(cache,
                                                   PyTuple_GET_ITEM(item, 0));
        if (target == NULL) {
            Py_DECREF(item);
            if (PyErr_Occurred()) {
                goto done;
            }
            continue; /* gone (terminated, or failed already) */
        }
        Py_INCREF(target);
        int rc = deliver_one(st, target, item);
        Py_DECREF(target);
        Py_DECREF(item);
        if (rc < 0) {
            /* a callback failed: report it, keep delivering; what is no
               Exception (KeyboardInterrupt, SystemExit) goes up */
            if (!PyErr_ExceptionMatches(PyExc_Exception) ||
                report_to_excepthook() < 0) {
                goto done;
            }
        }
    }
    result = Py_NewRef(Py_None);
done:
    Py_DECREF(seq);
    return result;
}

static PyMethodDef result_functions[] = {
    {"deliver", (PyCFunction)(void (*)(void))deliver_func,
     METH_FASTCALL | METH_KEYWORDS,
     "deliver(cache, results)\n--\n\n"
     "cache[job]._set(index, (ok, value)) for each (job, index, ok, value) "
     "of results whose job is in cache; an exception a callback raises "
     "goes to sys.excepthook."},
    {NULL, NULL, 0, NULL},
};

int
cmp_pool_result_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    st->str__cache = PyUnicode_InternFromString("_cache");
    st->str__set = PyUnicode_InternFromString("_set");
    if (st->str__cache == NULL || st->str__set == NULL) {
        return -1;
    }
    PyObject *itertools = PyImport_ImportModule("itertools");
    if (itertools == NULL) {
        return -1;
    }
    st->job_counter = PyObject_CallMethod(itertools, "count", NULL);
    Py_DECREF(itertools);
    if (st->job_counter == NULL) {
        return -1;
    }
    st->ApplyResult_type = PyType_FromModuleAndSpec(module, &result_spec,
                                                    NULL);
    if (st->ApplyResult_type == NULL ||
        PyModule_AddObjectRef(module, "ApplyResult", st->ApplyResult_type) <
            0 ||
        PyModule_AddObjectRef(module, "job_counter", st->job_counter) < 0 ||
        PyModule_AddFunctions(module, result_functions) < 0) {
        return -1;
    }
    return 0;
}
