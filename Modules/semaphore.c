/*
 * semaphore.c -- SemLock: a counting semaphore shared between processes,
 * with the per-object owner/recursion bookkeeping of multiprocessing's
 * locks, and the module's sem_unlink/flags.  The Condition/Event core built
 * on SemLock objects is condition.c's; what the two share is semlock.h.
 *
 * Blocking: one attempt with the GIL held, then a short spin (spin.h), then
 * a wait with the GIL released.  A wait without a timeout is the platform's
 * plain blocking wait, which every signal ends (EINTR); a timed wait goes
 * in slices towards a deadline (wait.h's cmp_wait_sliced).  After EINTR and
 * between slices the signal handlers run (PyErr_CheckSignals), so Ctrl-C
 * and SIGALRM handlers interrupt any wait.
 */
#include "cmp.h"
#include "semlock.h"
#include "spin.h"

#include <limits.h>
#include <string.h>

unsigned long cmp_semlock_generation; /* see semlock.h */

/* ------------------------------------------------------------------ */
/* Argument helpers (the parser itself is args.c's).                   */

/* A str without NUL characters, as UTF-8 (borrowed from the object). */
static const char *
as_sem_name(PyObject *obj)
{
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "semaphore name must be str, not %.100s",
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

/* ------------------------------------------------------------------ */
/* Raw semaphore operations with the waiting policy.                   */

/* Take a unit without blocking: 1 taken, 0 count was zero, -1 error. */
static int
sem_take_now(cmp_sem_t sem)
{
    for (;;) {
        int rc = cmp_sem_trywait(sem);
        if (rc == CMP_OK) {
            return 1;
        }
        if (rc == CMP_BUSY) {
            return 0;
        }
        if (rc != CMP_INTR) {
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
        if (rc == CMP_OK) {
            return 1;
        }
        if (rc != CMP_BUSY && rc != CMP_INTR) {
            cmp_raise_oserror(rc);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* One slice of a timed wait (wait.h's cmp_wait_step). */
static int
sem_wait_step(void *ctx, double slice, int *err)
{
    int rc = cmp_sem_wait_for(*(cmp_sem_t *)ctx, slice);
    if (rc == CMP_OK) {
        return 1;
    }
    if (rc == CMP_BUSY || rc == CMP_INTR) {
        return 0;
    }
    *err = rc;
    return -1;
}

/* Wait at most `seconds` for a unit with the GIL released, in slices
   (cmp_wait_sliced).  1 taken, 0 timed out, -1 error. */
static int
sem_take_timed(cmp_sem_t sem, double seconds)
{
    cmp_deadline d = cmp_deadline_in(1, seconds);
    return cmp_wait_sliced(&d, sem_wait_step, &sem);
}

/* A spinning wait's check: take a unit if there is one (ready = taken). */
static int
sem_check_take(void *arg, int *ready)
{
    int rc = cmp_sem_trywait(*(cmp_sem_t *)arg);
    *ready = rc == CMP_OK;
    return (rc == CMP_OK || rc == CMP_BUSY || rc == CMP_INTR) ? 0 : rc;
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
/* Locks whose holder may die (robust.h).                              */

/* How often a failed non-blocking try may look at the holder (seconds):
   a look reads /proc, some microseconds, which a polling loop of tries
   should not pay every time. */
#define LOOK_INTERVAL 0.01

typedef struct {
    cmp_sem_t sem;
    cmp_owner_rec *rec;
    uint64_t me, dead;
    int claimed;
} robust_wait;

/* Claim the record if its holder is gone.  A holder that cannot be looked
   at counts as alive: the wait goes on as it would without a record. */
static int
holder_gone_claimed(robust_wait *w)
{
    if (cmp_owner_claim_if_gone(w->rec, w->me, &w->claimed, &w->dead) != 0) {
        w->claimed = 0;
    }
    return w->claimed;
}

/* One slice of a wait on a lock with an owner record (robust.h: the
   record is the lock; its semaphore is where waiters sleep): the lock, or,
   when the slice passes without it, the holder's place if it is gone. */
static int
robust_step(void *ctx, double slice, int *err)
{
    robust_wait *w = (robust_wait *)ctx;
    cmp_owner_wait_begin(w->rec);
    if (cmp_owner_try(w->rec, w->me)) {
        cmp_owner_wait_end(w->rec);
        return 1;
    }
    int rc = cmp_sem_wait_for(w->sem, slice);
    if (rc == CMP_OK || rc == CMP_BUSY) {
        cmp_owner_woke(w->rec);
    }
    cmp_owner_wait_end(w->rec);
    if (rc != CMP_OK && rc != CMP_BUSY && rc != CMP_INTR) {
        *err = rc;
        return -1;
    }
    if (cmp_owner_try(w->rec, w->me)) {
        return 1;
    }
    /* woken for nothing (another took it first), or a signal: wait on;
       a slice that passed: look at the holder */
    return rc == CMP_BUSY ? holder_gone_claimed(w) : 0;
}

/* A spinning wait's check on a lock with an owner record: a look first,
   the compare-and-swap only when the lock looks free (a failing swap
   would take the word's cache line from the holder at every check). */
static int
robust_check_take(void *arg, int *ready)
{
    robust_wait *w = (robust_wait *)arg;
    *ready = cmp_owner_load(w->rec) == 0 && cmp_owner_try(w->rec, w->me);
    return 0;
}

/* Wait for the lock (forever without has_timeout), or take it over from a
   holder that died: 1 taken (w->claimed tells how), 0 timed out, -1
   error.  The holder is looked at once a slice (CMP_WAIT_SLICE), and once
   more when the time is up, so a zero timeout looks too. */
static int
robust_take(SemLockObject *self, int has_timeout, double seconds,
            robust_wait *w)
{
    cmp_deadline d = cmp_deadline_in(has_timeout, seconds);
    int got = cmp_wait_sliced(&d, robust_step, w);
    if (got == 0 && holder_gone_claimed(w)) {
        got = 1;
    }
    self->next_look = cmp_monotonic() + LOOK_INTERVAL;
    return got;
}

/* After taking the lock over from a dead holder: tell the new holder.
   When the warning is made an error (warnings filter "error"), the lock
   is left as it was, still held by the dead process, so that the next
   acquirer is told as well: -1 with the exception set. */
static int
warn_taken_over(SemLockObject *self, robust_wait *w)
{
    if (self->quiet) {
        return 0;
    }
    cmp_state *st = cmp_state_from_type(Py_TYPE(self));
    if (PyErr_WarnFormat(st->AbandonedLockWarning, 1,
                         "%s taken over from process %ld, which ended while "
                         "holding it: what it guards may be half-updated",
                         self->kind == CMP_RECURSIVE_MUTEX ? "RLock" : "Lock",
                         cmp_owner_pid(w->dead)) == 0) {
        return 0;
    }
    (void)cmp_owner_swap(self->rec, w->me, w->dead);
    return -1;
}

/* ------------------------------------------------------------------ */
/* SemLock                                                             */

/* The unit is ours (or, with an owner record, the record names this
   process): this thread holds it.  Returns 1. */
static inline int
semlock_taken(SemLockObject *self)
{
    semlock_sync(self);
    self->count++;
    self->last_tid = PyThread_get_thread_ident();
    return 1;
}

/* How long an acquire spins before it sleeps: the object's budget
   (spin.h), never past a timeout. */
static double
spin_budget(SemLockObject *self, int has_timeout, double seconds)
{
    double budget = cmp_spin_budget(&self->spin);
    if (has_timeout && budget > seconds) {
        budget = seconds > 0.0 ? seconds : 0.0;
    }
    return budget;
}

/* acquire() of a lock with an owner record (robust.h): the record is the
   lock.  1 taken, 0 not, -1 error. */
static int
robust_acquire(SemLockObject *self, int blocking, int has_timeout,
               double seconds)
{
    robust_wait w = {self->handle, self->rec, cmp_proc_self_tag(), 0, 0};
    int got = cmp_owner_try(w.rec, w.me);
    if (!got && blocking) {
        double budget = spin_budget(self, has_timeout, seconds);
        if (budget > 0.0) {
            int rc;
            Py_BEGIN_ALLOW_THREADS
            rc = cmp_spin_until(budget, robust_check_take, &w, &got);
            Py_END_ALLOW_THREADS
            cmp_spin_result(&self->spin, budget, got);
            if (rc != 0) {
                cmp_raise_oserror(rc);
                return -1;
            }
            if (has_timeout) {
                seconds -= budget;
            }
        }
        if (!got) {
            got = robust_take(self, has_timeout, seconds, &w);
        }
    }
    else if (!got) {
        double now = cmp_monotonic();
        if (now >= self->next_look) {
            got = holder_gone_claimed(&w);
            self->next_look = now + LOOK_INTERVAL;
        }
    }
    if (got == 1 && w.claimed && warn_taken_over(self, &w) < 0) {
        return -1;
    }
    /* (taken over: the record names us already) */
    return got == 1 ? semlock_taken(self) : got;
}

/* acquire(): see semlock.h. */
int
cmp_semlock_take(SemLockObject *self, int blocking, int has_timeout,
                 double seconds)
{
    if (self->kind == CMP_RECURSIVE_MUTEX && semlock_is_mine(self)) {
        self->count++;
        return 1;
    }
    if (self->rec != NULL) {
        return robust_acquire(self, blocking, has_timeout, seconds);
    }
    int got = sem_take_now(self->handle);
    if (got != 0) {
        return got < 0 ? -1 : semlock_taken(self);
    }
    if (blocking) {
        double budget = spin_budget(self, has_timeout, seconds);
        if (budget > 0.0) {
            got = sem_take_spinning(self->handle, &self->spin, budget);
            if (has_timeout) {
                seconds -= budget;
            }
        }
    }
    if (got != 0) {
        return got < 0 ? -1 : semlock_taken(self);
    }
    if (blocking) {
        got = has_timeout ? sem_take_timed(self->handle, seconds)
                          : sem_take_untimed(self->handle);
    }
    return got == 1 ? semlock_taken(self) : got;
}

/* release(): see semlock.h. */
int
cmp_semlock_give(SemLockObject *self)
{
    int rc;
    semlock_sync(self);
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
    }
    if (self->rec != NULL) {
        /* the record is the lock (robust.h) */
        if (cmp_owner_load(self->rec) == 0) {
            rc = CMP_OVERFLOW;
        }
        else {
            rc = cmp_owner_give(self->rec, self->handle);
        }
    }
    else if (self->kind == CMP_RECURSIVE_MUTEX) {
        rc = cmp_sem_post(self->handle, -1);
    }
    else {
        rc = cmp_sem_post(self->handle, self->maxvalue);
    }
    if (rc == CMP_OVERFLOW) {
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

/* See semlock.h. */
PyObject *
cmp_semlock_released(void)
{
    if (PyErr_CheckSignals() < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
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
    self->generation = cmp_semlock_generation;
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

/* SemLock(kind, value, maxvalue, None, unlink, memory): the semaphore is
   made in `memory` (a writable buffer of shared memory, at least
   _SEM_IN_MEMORY_SIZE bytes aligned to 8: a heap block that forked
   children inherit) instead of being opened by name.  Nothing reaches it
   but inheritance, so it is for fork contexts only; the object keeps the
   buffer exported while it lives. */
static PyObject *
semlock_new_in_memory(PyTypeObject *type, int kind, int value, int maxvalue,
                      PyObject *memory)
{
    Py_buffer view;
    if (PyObject_GetBuffer(memory, &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    cmp_sem_t handle = CMP_SEM_NONE;
    int rc = cmp_sem_create_in(view.buf, (size_t)view.len, value, &handle);
    if (rc != 0) {
        PyBuffer_Release(&view);
        return cmp_raise_oserror(rc);
    }
    SemLockObject *self = (SemLockObject *)semlock_wrap(type, handle, kind,
                                                        maxvalue, NULL);
    if (self == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->in_memory = 1;
    self->mem_view = view;
    return (PyObject *)self;
}

static PyObject *
semlock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"kind", "value",  "maxvalue",
                                        "name", "unlink", "memory"};
    static const cmp_argspec spec = CMP_ARGSPEC("SemLock", names, 5);
    PyObject *a[6];
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
    PyObject *memory = a[5] == Py_None ? NULL : a[5];
    const char *name = NULL;
    if (memory == NULL || a[3] != Py_None) {
        name = as_sem_name(a[3]);
        if (name == NULL) {
            return NULL;
        }
    }
    if (cmp_arg_bool(a[4], 1, &unlink) < 0 || check_kind(kind) < 0) {
        return NULL;
    }
    if (value < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "semaphore initial value must be >= 0");
        return NULL;
    }
    if (value > CMP_SEM_VALUE_MAX) {
        PyErr_Format(PyExc_ValueError, "semaphore initial value must be <= %d",
                     CMP_SEM_VALUE_MAX);
        return NULL;
    }
    if (maxvalue < 0) {
        /* 0 is allowed: a BoundedSemaphore(0) refuses every release */
        PyErr_SetString(PyExc_ValueError, "maxvalue must be >= 0");
        return NULL;
    }
    if (memory != NULL) {
        if (name != NULL) {
            PyErr_SetString(PyExc_ValueError,
                            "a semaphore made in memory has no name");
            return NULL;
        }
        return semlock_new_in_memory(type, kind, value, maxvalue, memory);
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
    if (self->in_memory) {
        /* never destroyed: a forked child may still use it (sem.h) */
        self->handle = CMP_SEM_NONE;
        self->in_memory = 0;
        PyBuffer_Release(&self->mem_view);
    }
    else if (self->handle != CMP_SEM_NONE) {
        (void)cmp_sem_close(self->handle);
        self->handle = CMP_SEM_NONE;
    }
    PyMem_Free(self->name);
    self->name = NULL;
    if (self->rec != NULL) {
        self->rec = NULL;
        PyBuffer_Release(&self->rec_view);
    }
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
    int got = cmp_semlock_take((SemLockObject *)op, blocking, has_timeout,
                               seconds);
    if (got < 0) {
        return NULL;
    }
    return PyBool_FromLong(got);
}

static PyObject *
semlock_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    int got = cmp_semlock_take((SemLockObject *)op, 1, 0, 0.0);
    if (got < 0) {
        return NULL;
    }
    return PyBool_FromLong(got);
}

static PyObject *
semlock_release(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (cmp_semlock_give((SemLockObject *)op) < 0) {
        return NULL;
    }
    return cmp_semlock_released();
}

static PyObject *
semlock_exit(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    if (cmp_semlock_give((SemLockObject *)op) < 0) {
        return NULL;
    }
    return cmp_semlock_released();
}

/* See semlock.h. */
SemLockObject *
cmp_semlock_bound(PyObject *method, int acquire)
{
    if (!PyCFunction_Check(method)) {
        return NULL;
    }
    PyCFunction want = acquire ? (PyCFunction)(void (*)(void))semlock_acquire
                               : (PyCFunction)(void (*)(void))semlock_release;
    if (PyCFunction_GetFunction(method) != want) {
        return NULL;
    }
    /* (a method of SemLock's table is bound to SemLock instances only) */
    return (SemLockObject *)PyCFunction_GetSelf(method);
}

static PyObject *
semlock_count(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    semlock_sync((SemLockObject *)op);
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
    SemLockObject *self = (SemLockObject *)op;
    if (self->rec != NULL) {
        return PyLong_FromLong(cmp_owner_load(self->rec) == 0);
    }
    int value;
    int rc = cmp_sem_getvalue(self->handle, &value);
    if (rc != 0) {
        return cmp_raise_oserror(rc);
    }
    return PyLong_FromLong(value);
}

static PyObject *
semlock_is_zero(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SemLockObject *self = (SemLockObject *)op;
    if (self->rec != NULL) {
        return PyBool_FromLong(cmp_owner_load(self->rec) != 0);
    }
    int zero;
    int rc = cmp_sem_is_zero(self->handle, &zero);
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

/* _semlocks_after_fork(): in a child process, forget what every SemLock
   counted of its acquisitions (semlock.h's cmp_semlock_generation). */
static PyObject *
semlocks_after_fork(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    cmp_semlock_generation++;
    Py_RETURN_NONE;
}

cmp_owner_rec *
cmp_semlock_record(cmp_state *st, PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, (PyTypeObject *)st->SemLock_type)) {
        return NULL;
    }
    return ((SemLockObject *)obj)->rec;
}

/* _set_owner_record(buffer, quiet=False): make the lock robust
   (robust.h), with its owner record in `buffer` (shared memory every
   process using the lock maps: a block of the locks' heap), once, before
   the lock is used.  quiet: taken over without a warning. */
static PyObject *
semlock_set_owner_record(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    SemLockObject *self = (SemLockObject *)op;
    int quiet = 0;
    if (cmp_check_positional("_set_owner_record", nargs, 1, 2) < 0 ||
        (nargs > 1 && cmp_arg_bool(args[1], 0, &quiet) < 0)) {
        return NULL;
    }
    PyObject *arg = args[0];
    if (self->rec != NULL) {
        PyErr_SetString(PyExc_ValueError, "the lock has its owner record");
        return NULL;
    }
    if (self->kind == CMP_SEMAPHORE && self->maxvalue != 1) {
        PyErr_SetString(PyExc_ValueError,
                        "a counting semaphore has no owner to record");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if ((size_t)view.len < sizeof(cmp_owner_rec) ||
        ((uintptr_t)view.buf % 8) != 0) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "an owner record takes %zu bytes aligned to 8",
                     sizeof(cmp_owner_rec));
        return NULL;
    }
    self->rec_view = view;
    self->rec = (cmp_owner_rec *)view.buf;
    self->quiet = quiet;
    Py_RETURN_NONE;
}

/* _owner(): the pid the owner record names (None: no holder recorded, or
   no record). */
static PyObject *
semlock_owner(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SemLockObject *self = (SemLockObject *)op;
    uint64_t tag = self->rec == NULL ? 0 : cmp_owner_load(self->rec);
    if (tag == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(cmp_owner_pid(tag));
}

/* _rebuild(handle, kind, maxvalue, name): the object for a child process;
   the name (when there is one) is reopened, else the handle is used. */
static PyObject *
semlock_rebuild(PyObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    if (cmp_check_positional("_rebuild", nargs, 4, 4) < 0) {
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
    PyObject *self = semlock_wrap((PyTypeObject *)cls, handle, kind, maxvalue,
                                  name_copy);
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
    {"_set_owner_record",
     (PyCFunction)(void (*)(void))semlock_set_owner_record, METH_FASTCALL,
     "Record the holder in this shared buffer, so that a lock whose holder "
     "dies can be taken over."},
    {"_owner", semlock_owner, METH_NOARGS,
     "The pid of the recorded holder, or None."},
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
    {Py_tp_doc, "SemLock(kind, value, maxvalue, name, unlink, memory=None)\n\n"
                "Semaphore shared between processes; made in `memory` (a "
                "shared buffer) instead of by name when given."},
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
     "sem_unlink($module, name, /)\n--\n\n"
     "Remove a named semaphore."},
    {"_semlocks_after_fork", semlocks_after_fork, METH_NOARGS,
     "_semlocks_after_fork($module, /)\n--\n\n"
     "In a child process: every SemLock forgets the acquisitions it "
     "counted (they are the parent's)."},
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

    if (PyModule_AddFunctions(module, semaphore_functions) < 0 ||
        add_flags(module) < 0 ||
        PyModule_AddIntConstant(module, "SEM_VALUE_MAX", CMP_SEM_VALUE_MAX) <
            0 ||
        PyModule_AddIntConstant(module, "RECURSIVE_MUTEX",
                                CMP_RECURSIVE_MUTEX) < 0 ||
        PyModule_AddIntConstant(module, "SEMAPHORE", CMP_SEMAPHORE) < 0 ||
        PyModule_AddIntConstant(module, "_SEM_IN_MEMORY_SIZE",
                                CMP_SEM_IN_MEMORY_SIZE) < 0) {
        return -1;
    }
    return 0;
}
