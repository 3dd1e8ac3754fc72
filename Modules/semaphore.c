/*
 * semaphore.c -- SemLock: a counting semaphore shared between processes,
 * with the per-object owner/recursion bookkeeping of multiprocessing's
 * locks; and _ConditionCore, the native body of synchronize.Condition and
 * synchronize.Event (wait/notify and the event operations), built from
 * SemLock objects so that their hot paths never run Python code.
 *
 * Blocking: one attempt with the GIL held, then a wait with the GIL
 * released.  A wait without a timeout is the platform's plain blocking
 * wait, which every signal ends (EINTR); a timed wait goes in slices of at
 * most CMP_WAIT_SLICE towards a deadline on the monotonic clock.  After
 * EINTR and between slices the signal handlers run (PyErr_CheckSignals), so
 * Ctrl-C and SIGALRM handlers interrupt any wait.
 */
#include "cmp.h"
#include "spin.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* SemLock kinds (the values multiprocessing.synchronize uses). */
#define CMP_RECURSIVE_MUTEX 0
#define CMP_SEMAPHORE 1

/* ------------------------------------------------------------------ */
/* Argument helpers (the parser itself is args.c's).                   */

/* A str without NUL characters, as UTF-8 (borrowed from the object). */
static const char *
as_sem_name(PyObject *obj)
{
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "semaphore name must be str, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
    if (s == NULL) {
        return NULL;
    }
    if ((size_t)len != strlen(s)) {
        PyErr_SetString(PyExc_ValueError,
                        "semaphore name must not contain NUL characters");
        return NULL;
    }
    return s;
}

static char *
copy_name(const char *s)
{
    size_t len = strlen(s) + 1;
    char *copy = PyMem_Malloc(len);
    if (copy == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, s, len);
    return copy;
}

/* Keep an exception aside while cleanup runs, then put it back. */
typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} pending_exc;

static void
exc_stash(pending_exc *p)
{
#if PY_VERSION_HEX >= 0x030C0000
    p->exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&p->type, &p->value, &p->tb);
#endif
}

/* Restore the stashed exception.  If the cleanup raised one of its own,
   that one wins (as in a Python `finally`) and the stash becomes its
   context where the API allows it. */
static void
exc_unstash(pending_exc *p)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (p->exc == NULL) {
        return;
    }
    if (PyErr_Occurred()) {
        PyObject *now = PyErr_GetRaisedException();
        PyException_SetContext(now, p->exc);
        PyErr_SetRaisedException(now);
    }
    else {
        PyErr_SetRaisedException(p->exc);
    }
    p->exc = NULL;
#else
    if (p->type == NULL) {
        return;
    }
    if (PyErr_Occurred()) {
        Py_XDECREF(p->type);
        Py_XDECREF(p->value);
        Py_XDECREF(p->tb);
    }
    else {
        PyErr_Restore(p->type, p->value, p->tb);
    }
    p->type = p->value = p->tb = NULL;
#endif
}

/* ------------------------------------------------------------------ */
/* Raw semaphore operations with the waiting policy.                   */

/* Take a unit without blocking: 1 taken, 0 count was zero, -1 error. */
static int
sem_take_now(cmp_sem_t sem)
{
    for (;;) {
        int rc = cmp_sem_trywait(sem);
        if (rc == CMP_SEM_OK) {
            return 1;
        }
        if (rc == CMP_SEM_BUSY) {
            return 0;
        }
        if (rc != CMP_SEM_INTR) {
            cmp_raise_oserror(rc);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* Wait for a unit with the GIL released, with no time limit: the
   platform's plain blocking wait (what the stdlib does), which a signal
   interrupts; the handlers run and the wait resumes unless one raised.
   1 taken, -1 error. */
static int
sem_take_untimed(cmp_sem_t sem)
{
    for (;;) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = cmp_sem_wait(sem);
        Py_END_ALLOW_THREADS
        if (rc == CMP_SEM_OK) {
            return 1;
        }
        if (rc != CMP_SEM_BUSY && rc != CMP_SEM_INTR) {
            cmp_raise_oserror(rc);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* Wait at most `seconds` for a unit with the GIL released, in slices of
   CMP_WAIT_SLICE on the monotonic clock.  1 taken, 0 timed out, -1 error. */
static int
sem_take_timed(cmp_sem_t sem, double seconds)
{
    double deadline = cmp_monotonic() + seconds;
    for (;;) {
        double left = deadline - cmp_monotonic();
        if (left <= 0.0) {
            return 0;
        }
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = cmp_sem_wait_for(sem, left < CMP_WAIT_SLICE ? left
                                                         : CMP_WAIT_SLICE);
        Py_END_ALLOW_THREADS
        if (rc == CMP_SEM_OK) {
            return 1;
        }
        if (rc != CMP_SEM_BUSY && rc != CMP_SEM_INTR) {
            cmp_raise_oserror(rc);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* A spinning wait's check: take a unit if there is one (ready = taken). */
static int
sem_check_take(void *arg, int *ready)
{
    int rc = cmp_sem_trywait(*(cmp_sem_t *)arg);
    *ready = rc == CMP_SEM_OK;
    return (rc == CMP_SEM_OK || rc == CMP_SEM_BUSY || rc == CMP_SEM_INTR)
           ? 0 : rc;
}

/* Check for a unit for up to `budget` seconds with the GIL released
   (spin.h), before the blocking wait.  1 taken, 0 not, -1 error. */
static int
sem_take_spinning(cmp_sem_t sem, cmp_spin *spin, double budget)
{
    int rc, taken = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = cmp_spin_until(budget, sem_check_take, (void *)&sem, &taken);
    Py_END_ALLOW_THREADS
    cmp_spin_result(spin, budget, taken);
    if (rc != 0) {
        cmp_raise_oserror(rc);
        return -1;
    }
    return taken;
}

/* ------------------------------------------------------------------ */
/* SemLock                                                             */

typedef struct {
    PyObject_HEAD
    cmp_sem_t handle;
    unsigned long last_tid; /* thread that last acquired */
    int count;              /* acquisitions not yet released */
    int kind;
    int maxvalue;
    cmp_spin spin;          /* before a blocking wait (spin.h) */
    char *name; /* NULL once unlinked at creation, or never named */
} SemLockObject;

static inline int
semlock_is_mine(SemLockObject *self)
{
    return self->count > 0 && self->last_tid == PyThread_get_thread_ident();
}

/* acquire(): 1 acquired, 0 not (non-blocking or timed out), -1 error. */
static int
semlock_take(SemLockObject *self, int blocking, int has_timeout,
             double seconds)
{
    if (self->kind == CMP_RECURSIVE_MUTEX && semlock_is_mine(self)) {
        self->count++;
        return 1;
    }
    int got = sem_take_now(self->handle);
    if (got == 0 && blocking) {
        double budget = cmp_spin_budget(&self->spin);
        if (has_timeout && budget > seconds) {
            budget = seconds > 0.0 ? seconds : 0.0;
        }
        if (budget > 0.0) {
            got = sem_take_spinning(self->handle, &self->spin, budget);
            if (has_timeout) {
                seconds -= budget;
            }
        }
    }
    if (got == 0 && blocking) {
        got = has_timeout ? sem_take_timed(self->handle, seconds)
                          : sem_take_untimed(self->handle);
    }
    if (got == 1) {
        self->count++;
        self->last_tid = PyThread_get_thread_ident();
    }
    return got;
}

/* release(): 0 or -1 with an exception. */
static int
semlock_give(SemLockObject *self)
{
    int rc;
    if (self->kind == CMP_RECURSIVE_MUTEX) {
        if (!semlock_is_mine(self)) {
            PyErr_SetString(
                PyExc_AssertionError,
                "attempt to release recursive lock not owned by thread");
            return -1;
        }
        if (self->count > 1) {
            self->count--;
            return 0;
        }
        rc = cmp_sem_post(self->handle, -1);
    }
    else {
        rc = cmp_sem_post(self->handle, self->maxvalue);
    }
    if (rc == CMP_SEM_OVERFLOW) {
        PyErr_SetString(PyExc_ValueError,
                        "semaphore or lock released too many times");
        return -1;
    }
    if (rc != 0) {
        cmp_raise_oserror(rc);
        return -1;
    }
    self->count--;
    return 0;
}

static PyObject *
semlock_wrap(PyTypeObject *type, cmp_sem_t handle, int kind, int maxvalue,
             char *name)
{
    SemLockObject *self = (SemLockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->handle = handle;
    self->kind = kind;
    self->maxvalue = maxvalue;
    self->name = name;
    self->count = 0;
    self->last_tid = 0;
    return (PyObject *)self;
}

static int
check_kind(int kind)
{
    if (kind != CMP_RECURSIVE_MUTEX && kind != CMP_SEMAPHORE) {
        PyErr_SetString(PyExc_ValueError, "unrecognized kind");
        return -1;
    }
    return 0;
}

static PyObject *
semlock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"kind", "value", "maxvalue", "name",
                                        "unlink"};
    static const cmp_argspec spec = CMP_ARGSPEC("SemLock", names, 5);
    PyObject *a[5];
    int kind, value, maxvalue, unlink;
    char *name_copy = NULL;
    cmp_sem_t handle = CMP_SEM_NONE;

    if (cmp_parse_tuple(&spec, args, kwds, a) < 0) {
        return NULL;
    }
    if (cmp_arg_int(a[0], "kind", &kind) < 0 ||
        cmp_arg_int(a[1], "value", &value) < 0 ||
        cmp_arg_int(a[2], "maxvalue", &maxvalue) < 0) {
        return NULL;
    }
    const char *name = as_sem_name(a[3]);
    if (name == NULL || cmp_arg_bool(a[4], 1, &unlink) < 0) {
        return NULL;
    }
    if (check_kind(kind) < 0) {
        return NULL;
    }
    if (value < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "semaphore initial value must be >= 0");
        return NULL;
    }
    if (value > CMP_SEM_VALUE_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "semaphore initial value must be <= %d",
                     CMP_SEM_VALUE_MAX);
        return NULL;
    }
    if (maxvalue < 0) {
        /* 0 is allowed: a BoundedSemaphore(0) refuses every release */
        PyErr_SetString(PyExc_ValueError, "maxvalue must be >= 0");
        return NULL;
    }
    if (!unlink && (name_copy = copy_name(name)) == NULL) {
        return NULL;
    }
    int rc = cmp_sem_create(name, value, maxvalue, &handle);
    if (rc != 0) {
        cmp_raise_oserror(rc);
        goto error;
    }
    if (unlink && CMP_SEM_HAVE_SEM_OPEN) {
        rc = cmp_sem_unlink(name);
        if (rc != 0) {
            cmp_raise_oserror(rc);
            goto error;
        }
    }
    PyObject *self = semlock_wrap(type, handle, kind, maxvalue, name_copy);
    if (self == NULL) {
        goto error;
    }
    return self;

error:
    if (handle != CMP_SEM_NONE) {
        (void)cmp_sem_close(handle);
        if (!unlink) {
            (void)cmp_sem_unlink(name);
        }
    }
    PyMem_Free(name_copy);
    return NULL;
}

static void
semlock_dealloc(PyObject *op)
{
    SemLockObject *self = (SemLockObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    if (self->handle != CMP_SEM_NONE) {
        (void)cmp_sem_close(self->handle);
        self->handle = CMP_SEM_NONE;
    }
    PyMem_Free(self->name);
    self->name = NULL;
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
semlock_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("acquire", names, 0);
    PyObject *a[2] = {NULL, NULL};
    int blocking = 1, has_timeout = 0;
    double seconds = 0.0;
    if (kwnames == NULL && nargs <= 2) {
        /* the common spellings: acquire(), acquire(False), acquire(b, t) */
        if (nargs > 0) {
            a[0] = args[0];
        }
        if (nargs > 1) {
            a[1] = args[1];
        }
    }
    else if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (a[0] != NULL && a[0] != Py_True) {
        blocking = a[0] == Py_False ? 0 : PyObject_IsTrue(a[0]);
        if (blocking < 0) {
            return NULL;
        }
    }
    if (a[1] != NULL && a[1] != Py_None &&
        cmp_parse_timeout(a[1], &has_timeout, &seconds) < 0) {
        return NULL;
    }
    int got = semlock_take((SemLockObject *)op, blocking, has_timeout,
                           seconds);
    if (got < 0) {
        return NULL;
    }
    return PyBool_FromLong(got);
}

static PyObject *
semlock_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    int got = semlock_take((SemLockObject *)op, 1, 0, 0.0);
    if (got < 0) {
        return NULL;
    }
    return PyBool_FromLong(got);
}

static PyObject *
semlock_release(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (semlock_give((SemLockObject *)op) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
semlock_exit(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    if (semlock_give((SemLockObject *)op) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
semlock_count(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(((SemLockObject *)op)->count);
}

static PyObject *
semlock_is_mine_meth(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(semlock_is_mine((SemLockObject *)op));
}

static PyObject *
semlock_get_value(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (CMP_SEM_BROKEN_GETVALUE) {
        PyErr_SetString(PyExc_NotImplementedError,
                        "sem_getvalue() does not work on this platform");
        return NULL;
    }
    int value;
    int rc = cmp_sem_getvalue(((SemLockObject *)op)->handle, &value);
    if (rc != 0) {
        return cmp_raise_oserror(rc);
    }
    return PyLong_FromLong(value);
}

static PyObject *
semlock_is_zero(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    int zero;
    int rc = cmp_sem_is_zero(((SemLockObject *)op)->handle, &zero);
    if (rc != 0) {
        return cmp_raise_oserror(rc);
    }
    return PyBool_FromLong(zero);
}

static PyObject *
semlock_after_fork(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    /* The child's threads are not the ones that acquired. */
    ((SemLockObject *)op)->count = 0;
    Py_RETURN_NONE;
}

/* _rebuild(handle, kind, maxvalue, name): the object for a child process;
   the name (when there is one) is reopened, else the handle is used. */
static PyObject *
semlock_rebuild(PyObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "_rebuild() takes exactly 4 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    int kind, maxvalue;
    void *raw = PyLong_AsVoidPtr(args[0]);
    if (raw == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (cmp_arg_int(args[1], "kind", &kind) < 0 ||
        cmp_arg_int(args[2], "maxvalue", &maxvalue) < 0 ||
        check_kind(kind) < 0) {
        return NULL;
    }
    char *name_copy = NULL;
    if (args[3] != Py_None) {
        const char *name = as_sem_name(args[3]);
        if (name == NULL || (name_copy = copy_name(name)) == NULL) {
            return NULL;
        }
    }
    cmp_sem_t handle = CMP_SEM_NONE;
    int rc = cmp_sem_reopen(name_copy, (cmp_sem_t)raw, &handle);
    if (rc != 0) {
        PyMem_Free(name_copy);
        return cmp_raise_oserror(rc);
    }
    PyObject *self = semlock_wrap((PyTypeObject *)cls, handle, kind,
                                  maxvalue, name_copy);
    if (self == NULL) {
        if (name_copy != NULL) {
            (void)cmp_sem_close(handle);
        }
        PyMem_Free(name_copy);
    }
    return self;
}

static PyObject *
semlock_get_handle(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr((void *)((SemLockObject *)op)->handle);
}

static PyObject *
semlock_get_kind(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(((SemLockObject *)op)->kind);
}

static PyObject *
semlock_get_maxvalue(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(((SemLockObject *)op)->maxvalue);
}

static PyObject *
semlock_get_name(PyObject *op, void *Py_UNUSED(closure))
{
    const char *name = ((SemLockObject *)op)->name;
    if (name == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(name);
}

static PyObject *semlock_init_subclass(PyObject *cls, PyObject *const *args,
                                       Py_ssize_t nargs, PyObject *kwnames);

static PyMethodDef semlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))semlock_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire(block=True, timeout=None) -> bool\n\n"
     "Take the semaphore (or the lock); False if it could not be taken "
     "without blocking or before the timeout."},
    {"release", semlock_release, METH_NOARGS,
     "Give back the semaphore (or the lock)."},
    {"__enter__", semlock_enter, METH_NOARGS, "Acquire, blocking."},
    {"__exit__", (PyCFunction)(void (*)(void))semlock_exit, METH_FASTCALL,
     "Release."},
    {"_count", semlock_count, METH_NOARGS,
     "Acquisitions by this process not released yet."},
    {"_is_mine", semlock_is_mine_meth, METH_NOARGS,
     "Whether the calling thread holds it."},
    {"_get_value", semlock_get_value, METH_NOARGS,
     "The semaphore's current count."},
    {"_is_zero", semlock_is_zero, METH_NOARGS,
     "Whether the semaphore's count is zero."},
    {"_after_fork", semlock_after_fork, METH_NOARGS,
     "Forget this process's acquisitions (called in a forked child)."},
    {"_rebuild", (PyCFunction)(void (*)(void))semlock_rebuild,
     METH_FASTCALL | METH_CLASS,
     "_rebuild(handle, kind, maxvalue, name): reopen in another process."},
    {"__init_subclass__", (PyCFunction)(void (*)(void))semlock_init_subclass,
     METH_FASTCALL | METH_KEYWORDS | METH_CLASS,
     "Give the new subclass its own method descriptors (see semaphore.c)."},
    {NULL, NULL, 0, NULL},
};

/* The interpreter's specialized calls of a C method (3.12: the
   CALL_*_METHOD_DESCRIPTOR_* instructions) only apply when the instance's
   type is exactly the type the descriptor was made for; the instances of a
   Python subclass (Lock, RLock, Semaphore, ...) fail that check on every
   call of an inherited method, so `lock.acquire()` takes the slow generic
   path.  Each subclass therefore gets descriptors of its own for the
   methods it inherits unchanged (never over a method it overrides). */
static int
semlock_own_descriptor(PyTypeObject *cls, PyMethodDef *def)
{
    PyObject *name = PyUnicode_FromString(def->ml_name);
    if (name == NULL) {
        return -1;
    }
    /* what the class inherits now: one of our descriptors, made for a base
       class, unless some class in between defines the name itself */
    PyObject *found = PyObject_GetAttr((PyObject *)cls, name);
    int rc = 0;
    if (found == NULL) {
        rc = -1;
    }
    else if (Py_IS_TYPE(found, &PyMethodDescr_Type) &&
             ((PyMethodDescrObject *)found)->d_method == def &&
             PyDescr_TYPE(found) != cls) {
        PyObject *mine = PyDescr_NewMethod(cls, def);
        rc = mine == NULL ? -1 : PyObject_SetAttr((PyObject *)cls, name, mine);
        Py_XDECREF(mine);
    }
    Py_XDECREF(found);
    Py_DECREF(name);
    return rc;
}

static PyObject *
semlock_init_subclass(PyObject *cls, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    (void)args;
    if (nargs != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_Format(PyExc_TypeError,
                     "%.100s.__init_subclass__() takes no arguments",
                     ((PyTypeObject *)cls)->tp_name);
        return NULL;
    }
    for (PyMethodDef *def = semlock_methods; def->ml_name != NULL; def++) {
        if ((def->ml_flags & (METH_CLASS | METH_STATIC)) != 0) {
            continue;
        }
        if (semlock_own_descriptor((PyTypeObject *)cls, def) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyGetSetDef semlock_getset[] = {
    {"handle", semlock_get_handle, NULL, "OS handle of the semaphore", NULL},
    {"kind", semlock_get_kind, NULL, "RECURSIVE_MUTEX or SEMAPHORE", NULL},
    {"maxvalue", semlock_get_maxvalue, NULL, "bound of the count", NULL},
    {"name", semlock_get_name, NULL, "name, or None once unlinked", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot semlock_slots[] = {
    {Py_tp_new, semlock_new},
    {Py_tp_dealloc, semlock_dealloc},
    {Py_tp_methods, semlock_methods},
    {Py_tp_getset, semlock_getset},
    {Py_tp_doc, "SemLock(kind, value, maxvalue, name, unlink)\n\n"
                "Semaphore shared between processes."},
    {0, NULL},
};

static PyType_Spec semlock_spec = {
    .name = "_cmultiprocessing.SemLock",
    .basicsize = sizeof(SemLockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = semlock_slots,
};

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

static int
condcore_traverse(PyObject *op, visitproc visit, void *arg)
{
    CondCoreObject *self = (CondCoreObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->lock);
    Py_VISIT(self->sleeping);
    Py_VISIT(self->woken);
    Py_VISIT(self->waiting);
    Py_VISIT(self->flag);
    return 0;
}

static int
condcore_clear(PyObject *op)
{
    CondCoreObject *self = (CondCoreObject *)op;
    Py_CLEAR(self->lock);
    Py_CLEAR(self->sleeping);
    Py_CLEAR(self->woken);
    Py_CLEAR(self->waiting);
    Py_CLEAR(self->flag);
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
    static const char *const names[] = {"lock", "sleeping", "woken",
                                        "waiting", "flag"};
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
    for (int i = 0; i < 5; i++) {
        if (a[i] != NULL &&
            !PyObject_TypeCheck(a[i], (PyTypeObject *)st->SemLock_type)) {
            PyErr_Format(PyExc_TypeError,
                         "_ConditionCore() argument '%s' must be a "
                         "cmultiprocessing lock or semaphore, not %.100s",
                         names[i], Py_TYPE(a[i])->tp_name);
            return NULL;
        }
    }
    CondCoreObject *self = (CondCoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->lock = (SemLockObject *)Py_NewRef(a[0]);
    self->sleeping = (SemLockObject *)Py_NewRef(a[1]);
    self->woken = (SemLockObject *)Py_NewRef(a[2]);
    self->waiting = (SemLockObject *)Py_NewRef(a[3]);
    self->flag = (SemLockObject *)Py_XNewRef(a[4]);
    return (PyObject *)self;
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
    if (semlock_give(c->sleeping) < 0) {
        return -1;
    }
    int depth = lock->count;
    for (int i = 0; i < depth; i++) {
        if (semlock_give(lock) < 0) {
            return -1;
        }
    }
    int got = semlock_take(c->waiting, 1, has_timeout, seconds);

    pending_exc stash;
    exc_stash(&stash);
    int failed = semlock_give(c->woken) < 0;
    for (int i = 0; i < depth && !failed; i++) {
        failed = semlock_take(lock, 1, 0, 0.0) < 0;
    }
    exc_unstash(&stash);
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
    int r = semlock_take(c->waiting, 0, 0, 0.0);
    if (r != 0) {
        if (r > 0) {
            PyErr_SetString(PyExc_AssertionError,
                            "notify: Should not have been able to acquire "
                            "_wait_semaphore");
        }
        return -1;
    }
    /* forget the sleepers that stopped waiting (timeouts) */
    while ((r = semlock_take(c->woken, 0, 0, 0.0)) == 1) {
        r = semlock_take(c->sleeping, 0, 0, 0.0);
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
        r = semlock_take(c->sleeping, 0, 0, 0.0);
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            break;
        }
        if (semlock_give(c->waiting) < 0) {
            return -1;
        }
        woke++;
    }
    if (woke == 0) {
        return 0;
    }
    /* each woken sleeper reports back */
    for (Py_ssize_t i = 0; i < woke; i++) {
        if (semlock_take(c->woken, 1, 0, 0.0) < 0) {
            return -1;
        }
    }
    /* take back the units of sleepers whose wait timed out meanwhile */
    while ((r = semlock_take(c->waiting, 0, 0, 0.0)) == 1) {
    }
    return r < 0 ? -1 : 0;
}

/* The (timeout=None) of Condition.wait and Event.wait. */
static int
condcore_parse_timeout(PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, int *has_timeout, double *seconds)
{
    static const char *const names[] = {"timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("wait", names, 0);
    PyObject *a[1];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return -1;
    }
    return cmp_parse_timeout(a[0], has_timeout, seconds);
}

static PyObject *
condcore_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    int has_timeout;
    double seconds;
    if (condcore_parse_timeout(args, nargs, kwnames, &has_timeout,
                               &seconds) < 0) {
        return NULL;
    }
    int got = cond_wait((CondCoreObject *)op, has_timeout, seconds);
    if (got < 0) {
        return NULL;
    }
    return PyBool_FromLong(got);
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
    static const char *const names[] = {"n"};
    static const cmp_argspec spec = CMP_ARGSPEC("notify", names, 0);
    PyObject *a[1];
    Py_ssize_t n;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        parse_notify_count(a[0], &n) < 0) {
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
    if (semlock_take(c->lock, 1, 0, 0.0) < 0) {
        return NULL;
    }
    int result = 0, r = 0;
    switch (op) {
    case EV_CLEAR:
        r = semlock_take(flag, 0, 0, 0.0);
        break;
    case EV_SET:
        r = semlock_take(flag, 0, 0, 0.0);
        if (r >= 0) {
            r = semlock_give(flag);
        }
        if (r >= 0) {
            r = cond_notify(c, -1);
        }
        break;
    case EV_WAIT:
        r = semlock_take(flag, 0, 0, 0.0);
        if (r == 1) {
            r = semlock_give(flag);
        }
        else if (r == 0) {
            r = cond_wait(c, has_timeout, seconds);
        }
        /* fall through: report the flag as it is now */
        /* FALLTHROUGH */
    case EV_IS_SET:
    default:
        if (op == EV_IS_SET || r >= 0) {
            r = semlock_take(flag, 0, 0, 0.0);
            if (r == 1) {
                result = 1;
                r = semlock_give(flag);
            }
        }
        break;
    }
    /* release the lock whatever happened, keeping the first exception */
    pending_exc stash;
    exc_stash(&stash);
    int unlock_failed = semlock_give(c->lock) < 0;
    exc_unstash(&stash);
    if (r < 0 || unlock_failed) {
        return NULL;
    }
    if (op == EV_SET || op == EV_CLEAR) {
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

static PyObject *
condcore_event_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    int has_timeout;
    double seconds;
    if (condcore_parse_timeout(args, nargs, kwnames, &has_timeout,
                               &seconds) < 0) {
        return NULL;
    }
    return event_run((CondCoreObject *)op, EV_WAIT, has_timeout, seconds);
}

/* Pickled as a new core over the same semaphores, so that a bound method
   (event.wait, cond.notify_all, ...) can be a spawned Process's target.
   Only a spawning child gets one: the semaphores refuse to be pickled
   otherwise. */
static PyObject *
condcore_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CondCoreObject *self = (CondCoreObject *)op;
    PyObject *flag = self->flag != NULL ? (PyObject *)self->flag : Py_None;
    return Py_BuildValue("O(OOOOO)", (PyObject *)Py_TYPE(op),
                         (PyObject *)self->lock, (PyObject *)self->sleeping,
                         (PyObject *)self->woken, (PyObject *)self->waiting,
                         flag);
}

static PyMethodDef condcore_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))condcore_wait,
     METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None) -> bool: Condition.wait (lock held)."},
    {"notify", (PyCFunction)(void (*)(void))condcore_notify,
     METH_FASTCALL | METH_KEYWORDS, "notify(n=1): Condition.notify."},
    {"notify_all", condcore_notify_all, METH_NOARGS,
     "Condition.notify_all."},
    {"is_set", condcore_is_set, METH_NOARGS, "Event.is_set."},
    {"set", condcore_set, METH_NOARGS, "Event.set."},
    {"clear", condcore_clear_flag, METH_NOARGS, "Event.clear."},
    {"event_wait", (PyCFunction)(void (*)(void))condcore_event_wait,
     METH_FASTCALL | METH_KEYWORDS, "event_wait(timeout=None): Event.wait."},
    {"__reduce__", condcore_reduce, METH_NOARGS,
     "A new core over the same semaphores (for a spawned child)."},
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

/* ------------------------------------------------------------------ */
/* Module functions and setup.                                         */

static PyObject *
cmp_sem_unlink_func(PyObject *Py_UNUSED(module), PyObject *arg)
{
    const char *name = as_sem_name(arg);
    if (name == NULL) {
        return NULL;
    }
    int rc = cmp_sem_unlink(name);
    if (rc != 0) {
        return cmp_raise_oserror(rc);
    }
    Py_RETURN_NONE;
}

static PyMethodDef semaphore_functions[] = {
    {"sem_unlink", cmp_sem_unlink_func, METH_O,
     "sem_unlink(name): remove a named semaphore."},
    {NULL, NULL, 0, NULL},
};

static int
add_int_to_dict(PyObject *dict, const char *key, long value)
{
    PyObject *v = PyLong_FromLong(value);
    if (v == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(dict, key, v);
    Py_DECREF(v);
    return rc;
}

static int
add_flags(PyObject *module)
{
    PyObject *flags = PyDict_New();
    if (flags == NULL) {
        return -1;
    }
    int rc = 0;
    if (CMP_SEM_HAVE_SEM_OPEN) {
        rc |= add_int_to_dict(flags, "HAVE_SEM_OPEN", 1);
    }
    if (CMP_SEM_HAVE_TIMEDWAIT) {
        rc |= add_int_to_dict(flags, "HAVE_SEM_TIMEDWAIT", 1);
    }
    if (CMP_SEM_BROKEN_GETVALUE) {
        rc |= add_int_to_dict(flags, "HAVE_BROKEN_SEM_GETVALUE", 1);
    }
    if (rc != 0) {
        Py_DECREF(flags);
        return -1;
    }
    rc = PyModule_AddObjectRef(module, "flags", flags);
    Py_DECREF(flags);
    return rc;
}

int
cmp_semaphore_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);

    st->SemLock_type = PyType_FromModuleAndSpec(module, &semlock_spec, NULL);
    if (st->SemLock_type == NULL) {
        return -1;
    }
    /* class constants, as _multiprocessing.SemLock has them */
    PyObject *tdict = ((PyTypeObject *)st->SemLock_type)->tp_dict;
    if (add_int_to_dict(tdict, "SEM_VALUE_MAX", CMP_SEM_VALUE_MAX) < 0 ||
        add_int_to_dict(tdict, "RECURSIVE_MUTEX", CMP_RECURSIVE_MUTEX) < 0 ||
        add_int_to_dict(tdict, "SEMAPHORE", CMP_SEMAPHORE) < 0) {
        return -1;
    }
    PyType_Modified((PyTypeObject *)st->SemLock_type);
    if (PyModule_AddObjectRef(module, "SemLock", st->SemLock_type) < 0) {
        return -1;
    }

    st->CondCore_type = PyType_FromModuleAndSpec(module, &condcore_spec,
                                                 NULL);
    if (st->CondCore_type == NULL ||
        PyModule_AddObjectRef(module, "_ConditionCore", st->CondCore_type) <
            0) {
        return -1;
    }

    if (PyModule_AddFunctions(module, semaphore_functions) < 0 ||
        add_flags(module) < 0 ||
        PyModule_AddIntConstant(module, "SEM_VALUE_MAX", CMP_SEM_VALUE_MAX) <
            0 ||
        PyModule_AddIntConstant(module, "RECURSIVE_MUTEX",
                                CMP_RECURSIVE_MUTEX) < 0 ||
        PyModule_AddIntConstant(module, "SEMAPHORE", CMP_SEMAPHORE) < 0) {
        return -1;
    }
    return 0;
}
