/*
 * condition.c -- _ConditionCore, the native body of synchronize.Condition
 * and synchronize.Event (wait/notify and the event operations), built from
 * SemLock objects (semlock.h) so that their hot paths never run Python
 * code.  The waits are SemLock's, with its blocking policy (semaphore.c).
 */
#include "cmp.h"
#include "semlock.h"

#include <math.h>
#include <stddef.h>

/* ------------------------------------------------------------------ */
/* _ConditionCore: Condition's wait/notify and Event's operations.     */
/*
 * The protocol is multiprocessing's, so that a Condition shared with a
 * process keeps working: waiters post `sleeping` before they let go of the
 * lock and post `woken` after their wait; notify(n) first cancels the
 * sleepers that gave up (one `sleeping` unit per `woken` unit), then hands
 * one `waiting` unit to each of up to n sleepers, waits for each of them to
 * report through `woken`, and finally takes back the units of sleepers that
 * timed out meanwhile.
 */

typedef struct {
    PyObject_HEAD
    SemLockObject *lock;
    SemLockObject *sleeping;
    SemLockObject *woken;
    SemLockObject *waiting;
    SemLockObject *flag; /* Event only, else NULL */
} CondCoreObject;

/* The five SemLock fields, in the order of _ConditionCore's arguments: the
   one list that traverse, clear and new walk. */
static const Py_ssize_t condcore_fields[] = {
    offsetof(CondCoreObject, lock),  offsetof(CondCoreObject, sleeping),
    offsetof(CondCoreObject, woken), offsetof(CondCoreObject, waiting),
    offsetof(CondCoreObject, flag),
};
enum {
    N_CONDCORE_FIELDS = (int)(sizeof(condcore_fields) / sizeof(Py_ssize_t))
};

static PyObject **
condcore_field(PyObject *op, int i)
{
    return (PyObject **)((char *)op + condcore_fields[i]);
}

static int
condcore_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    for (int i = 0; i < N_CONDCORE_FIELDS; i++) {
        Py_VISIT(*condcore_field(op, i));
    }
    return 0;
}

static int
condcore_clear(PyObject *op)
{
    for (int i = 0; i < N_CONDCORE_FIELDS; i++) {
        Py_CLEAR(*condcore_field(op, i));
    }
    return 0;
}

static void
condcore_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)condcore_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
condcore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"lock", "sleeping", "woken", "waiting",
                                        "flag"};
    static const cmp_argspec spec = CMP_ARGSPEC("_ConditionCore", names, 4);
    PyObject *a[5];
    if (cmp_parse_tuple(&spec, args, kwds, a) < 0) {
        return NULL;
    }
    if (a[4] == Py_None) {
        a[4] = NULL;
    }
    cmp_state *st = cmp_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    for (int i = 0; i < N_CONDCORE_FIELDS; i++) {
        if (a[i] != NULL &&
            !PyObject_TypeCheck(a[i], (PyTypeObject *)st->SemLock_type)) {
            PyErr_Format(PyExc_TypeError,
                         "_ConditionCore() argument '%s' must be a "
                         "cmultiprocessing lock or semaphore, not %.100s",
                         names[i], Py_TYPE(a[i])->tp_name);
            return NULL;
        }
    }
    PyObject *self = type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    for (int i = 0; i < N_CONDCORE_FIELDS; i++) {
        *condcore_field(self, i) = Py_XNewRef(a[i]); /* flag may be NULL */
    }
    return self;
}

/* Condition.wait: 1 notified, 0 timed out, -1 error.  The caller must hold
   the lock; it holds it again on return, unless reacquiring it was
   interrupted by an exception. */
static int
cond_wait(CondCoreObject *c, int has_timeout, double seconds)
{
    SemLockObject *lock = c->lock;
    if (!semlock_is_mine(lock)) {
        PyErr_SetString(PyExc_AssertionError,
                        "must acquire() condition before using wait()");
        return -1;
    }
    /* announce the sleeper, then let go of every level of the lock */
    if (cmp_semlock_give(c->sleeping) < 0) {
        return -1;
    }
    int depth = lock->count;
    for (int i = 0; i < depth; i++) {
        if (cmp_semlock_give(lock) < 0) {
            return -1;
        }
    }
    int got = cmp_semlock_take(c->waiting, 1, has_timeout, seconds);

    cmp_saved_exc stash;
    cmp_exc_save(&stash);
    int failed = cmp_semlock_give(c->woken) < 0;
    for (int i = 0; i < depth && !failed; i++) {
        failed = cmp_semlock_take(lock, 1, 0, 0.0) < 0;
    }
    cmp_exc_restore_under(&stash);
    if (failed || got < 0) {
        return -1;
    }
    return got;
}

/* Condition.notify(n); n < 0 means no limit.  0 or -1. */
static int
cond_notify(CondCoreObject *c, Py_ssize_t n)
{
    if (!semlock_is_mine(c->lock)) {
        PyErr_SetString(PyExc_AssertionError, "lock is not owned");
        return -1;
    }
    int r = cmp_semlock_take(c->waiting, 0, 0, 0.0);
    if (r != 0) {
        if (r > 0) {
            PyErr_SetString(PyExc_AssertionError,
                            "notify: Should not have been able to acquire "
                            "_wait_semaphore");
        }
        return -1;
    }
    /* forget the sleepers that stopped waiting (timeouts) */
    while ((r = cmp_semlock_take(c->woken, 0, 0, 0.0)) == 1) {
        r = cmp_semlock_take(c->sleeping, 0, 0, 0.0);
        if (r != 1) {
            if (r == 0) {
                PyErr_SetString(PyExc_AssertionError,
                                "notify: Bug in sleeping_count.acquire- res "
                                "should not be False");
            }
            return -1;
        }
    }
    if (r < 0) {
        return -1;
    }
    Py_ssize_t woke = 0;
    while (n < 0 || woke < n) {
        r = cmp_semlock_take(c->sleeping, 0, 0, 0.0);
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            break;
        }
        if (cmp_semlock_give(c->waiting) < 0) {
            return -1;
        }
        woke++;
    }
    if (woke == 0) {
        return 0;
    }
    /* each woken sleeper reports back */
    for (Py_ssize_t i = 0; i < woke; i++) {
        if (cmp_semlock_take(c->woken, 1, 0, 0.0) < 0) {
            return -1;
        }
    }
    /* take back the units of sleepers whose wait timed out meanwhile */
    while ((r = cmp_semlock_take(c->waiting, 0, 0, 0.0)) == 1) {
    }
    return r < 0 ? -1 : 0;
}

/* The one optional argument of wait(timeout=None) and notify(n=1), named
   `name` of method `fname`: *arg is NULL where it was not given. */
static int
condcore_arg(const char *fname, const char *name, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames, PyObject **arg)
{
    const char *const names[] = {name};
    const cmp_argspec spec = CMP_ARGSPEC(fname, names, 0);
    return cmp_parse_args(&spec, args, nargs, kwnames, arg);
}

/* The `n` of notify(n): an int (clamped), or a real number. */
static int
parse_notify_count(PyObject *obj, Py_ssize_t *n)
{
    if (obj == NULL) {
        *n = 1;
        return 0;
    }
    if (PyLong_Check(obj) || PyIndex_Check(obj)) {
        Py_ssize_t v = PyNumber_AsSsize_t(obj, NULL); /* clamps */
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        *n = v < 0 ? 0 : v;
        return 0;
    }
    double d = PyFloat_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(d)) {
        PyErr_SetString(PyExc_ValueError, "n must not be NaN");
        return -1;
    }
    d = ceil(d);
    *n = d <= 0.0 ? 0 : (d >= (double)PY_SSIZE_T_MAX ? -1 : (Py_ssize_t)d);
    return 0;
}

static PyObject *
condcore_notify(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    PyObject *count;
    Py_ssize_t n;
    if (condcore_arg("notify", "n", args, nargs, kwnames, &count) < 0 ||
        parse_notify_count(count, &n) < 0) {
        return NULL;
    }
    if (n == PY_SSIZE_T_MAX) {
        n = -1;
    }
    if (cond_notify((CondCoreObject *)op, n) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
condcore_notify_all(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (cond_notify((CondCoreObject *)op, -1) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Event operations: each runs under the condition's lock. */
enum { EV_IS_SET, EV_SET, EV_CLEAR, EV_WAIT };

static PyObject *
event_run(CondCoreObject *c, int op, int has_timeout, double seconds)
{
    SemLockObject *flag = c->flag;
    if (flag == NULL) {
        PyErr_SetString(PyExc_TypeError, "this core has no event flag");
        return NULL;
    }
    if (cmp_semlock_take(c->lock, 1, 0, 0.0) < 0) {
        return NULL;
    }
    int result = 0, r = 0;
    switch (op) {
    case EV_CLEAR:
        r = cmp_semlock_take(flag, 0, 0, 0.0);
        break;
    case EV_SET:
        r = cmp_semlock_take(flag, 0, 0, 0.0);
        if (r >= 0) {
            r = cmp_semlock_give(flag);
        }
        if (r >= 0) {
            r = cond_notify(c, -1);
        }
        break;
    case EV_WAIT:
        r = cmp_semlock_take(flag, 0, 0, 0.0);
        if (r == 1) {
            r = cmp_semlock_give(flag);
        }
        else if (r == 0) {
            r = cond_wait(c, has_timeout, seconds);
        }
        /* fall through: report the flag as it is now */
        /* FALLTHROUGH */
    case EV_IS_SET:
    default:
        if (op == EV_IS_SET || r >= 0) {
            r = cmp_semlock_take(flag, 0, 0, 0.0);
            if (r == 1) {
                result = 1;
                r = cmp_semlock_give(flag);
            }
        }
        break;
    }
    /* release the lock whatever happened, keeping the first exception */
    cmp_saved_exc stash;
    cmp_exc_save(&stash);
    int unlock_failed = cmp_semlock_give(c->lock) < 0;
    cmp_exc_restore_under(&stash);
    if (r < 0 || unlock_failed) {
        return NULL;
    }
    if (op == EV_SET) {
        return cmp_semlock_released();
    }
    if (op == EV_CLEAR) {
        Py_RETURN_NONE;
    }
    return PyBool_FromLong(result);
}

static PyObject *
condcore_is_set(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return event_run((CondCoreObject *)op, EV_IS_SET, 0, 0.0);
}

static PyObject *
condcore_set(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return event_run((CondCoreObject *)op, EV_SET, 0, 0.0);
}

static PyObject *
condcore_clear_flag(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return event_run((CondCoreObject *)op, EV_CLEAR, 0, 0.0);
}

/* wait(timeout=None): Event.wait where `event`, else Condition.wait. */
static PyObject *
condcore_timed_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames, int event)
{
    PyObject *timeout;
    int has_timeout;
    double seconds;
    if (condcore_arg("wait", "timeout", args, nargs, kwnames, &timeout) < 0 ||
        cmp_parse_timeout(timeout, &has_timeout, &seconds) < 0) {
        return NULL;
    }
    CondCoreObject *c = (CondCoreObject *)op;
    if (event) {
        return event_run(c, EV_WAIT, has_timeout, seconds);
    }
    int got = cond_wait(c, has_timeout, seconds);
    if (got < 0) {
        return NULL;
    }
    return PyBool_FromLong(got);
}

static PyObject *
condcore_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    return condcore_timed_wait(op, args, nargs, kwnames, 0);
}

static PyObject *
condcore_event_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    return condcore_timed_wait(op, args, nargs, kwnames, 1);
}

/* A bound method of the core (Event.wait, Condition.notify, ...) pickled
   for a new child: the core travels as its semaphores, which pickle only
   while a child is being spawned, as the Event or Condition itself. */
static PyObject *
condcore_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CondCoreObject *c = (CondCoreObject *)op;
    return Py_BuildValue("O(OOOOO)", (PyObject *)Py_TYPE(op), c->lock,
                         c->sleeping, c->woken, c->waiting,
                         c->flag ? (PyObject *)c->flag : Py_None);
}

static PyMethodDef condcore_methods[] = {
    {"__reduce__", condcore_reduce, METH_NOARGS, NULL},
    {"wait", (PyCFunction)(void (*)(void))condcore_wait,
     METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None) -> bool: Condition.wait (lock held)."},
    {"notify", (PyCFunction)(void (*)(void))condcore_notify,
     METH_FASTCALL | METH_KEYWORDS, "notify(n=1): Condition.notify."},
    {"notify_all", condcore_notify_all, METH_NOARGS, "Condition.notify_all."},
    {"is_set", condcore_is_set, METH_NOARGS, "Event.is_set."},
    {"set", condcore_set, METH_NOARGS, "Event.set."},
    {"clear", condcore_clear_flag, METH_NOARGS, "Event.clear."},
    {"event_wait", (PyCFunction)(void (*)(void))condcore_event_wait,
     METH_FASTCALL | METH_KEYWORDS, "event_wait(timeout=None): Event.wait."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot condcore_slots[] = {
    {Py_tp_new, condcore_new},
    {Py_tp_dealloc, condcore_dealloc},
    {Py_tp_traverse, condcore_traverse},
    {Py_tp_clear, condcore_clear},
    {Py_tp_methods, condcore_methods},
    {Py_tp_doc, "_ConditionCore(lock, sleeping, woken, waiting, flag=None)"
                "\n\nNative wait/notify over SemLock objects."},
    {0, NULL},
};

static PyType_Spec condcore_spec = {
    .name = "_cmultiprocessing._ConditionCore",
    .basicsize = sizeof(CondCoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = condcore_slots,
};

int
cmp_condition_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    st->CondCore_type = PyType_FromModuleAndSpec(module, &condcore_spec, NULL);
    if (st->CondCore_type == NULL ||
        PyModule_AddObjectRef(module, "_ConditionCore", st->CondCore_type) <
            0) {
        return -1;
    }
    return 0;
}
