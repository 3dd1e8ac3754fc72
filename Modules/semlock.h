/*
 * semlock.h -- what semaphore.c (SemLock) shares with condition.c (the
 * Condition/Event core built from SemLock objects): the object's layout and
 * its acquire/release with the waiting policy, so that the core's hot paths
 * never go through Python calls.
 */
#ifndef CMP_SEMLOCK_H
#define CMP_SEMLOCK_H

#include "cmp.h"
#include "robust.h"
#include "spin.h"

/* SemLock kinds (the values multiprocessing.synchronize uses). */
#define CMP_RECURSIVE_MUTEX 0
#define CMP_SEMAPHORE 1

typedef struct {
    PyObject_HEAD
    cmp_sem_t handle;
    unsigned long last_tid; /* thread that last acquired */
    int count;              /* acquisitions not yet released */
    unsigned long generation; /* cmp_semlock_generation that count is of */
    int kind;
    int maxvalue;
    cmp_spin spin;          /* before a blocking wait (spin.h) */
    char *name; /* NULL once unlinked at creation, or never named */
    /* A semaphore made in shared memory (cmp_sem_create_in) rather than
       opened by name: mem_view keeps that memory (a heap block) alive as
       long as the object, and handle points into it. */
    int in_memory;
    Py_buffer mem_view;
    /* Lock and RLock: who holds it, in shared memory (robust.h); NULL for
       the counting semaphores, which have no owner.  rec_view keeps the
       memory (a heap block) mapped. */
    cmp_owner_rec *rec;
    Py_buffer rec_view;
    int quiet; /* taken over without AbandonedLockWarning (a queue's lock:
                  the queue tells what was lost) */
    double next_look; /* a failed try looks at the holder again from then */
} SemLockObject;

/* Bumped in a child process by util._run_after_forkers() (through
   _cmultiprocessing._semlocks_after_fork): the acquisitions every SemLock
   counted belong to the parent's threads.  One counter instead of an
   after-fork hook per lock, which cost each lock a registry entry and each
   child a walk over all of them; it applies where and when the stdlib's
   per-lock hook (SemLock._after_fork) would, only all at once.  A plain
   integer written in the child before it starts any thread. */
extern unsigned long cmp_semlock_generation;

/* Forget the counted acquisitions if a fork came between (see above). */
static inline void
semlock_sync(SemLockObject *self)
{
    if (self->generation != cmp_semlock_generation) {
        self->generation = cmp_semlock_generation;
        self->count = 0;
    }
}

static inline int
semlock_is_mine(SemLockObject *self)
{
    semlock_sync(self);
    return self->count > 0 && self->last_tid == PyThread_get_thread_ident();
}

/* acquire(): 1 acquired, 0 not (non-blocking or timed out), -1 error.
   With an owner record, a lock whose holder died is taken over from it
   (after an AbandonedLockWarning; see robust.h). */
int cmp_semlock_take(SemLockObject *self, int blocking, int has_timeout,
                     double seconds);

/* The owner record of obj when it is a SemLock that has one, else NULL
   (borrowed: valid while obj lives). */
cmp_owner_rec *cmp_semlock_record(cmp_state *st, PyObject *obj);

/* release(): 0 or -1 with an exception. */
int cmp_semlock_give(SemLockObject *self);

/* The SemLock whose own acquire (acquire != 0) or release `method` is
   bound to, or NULL (another callable: call it).  Lets the queues take
   and give their locks without a Python call (borrowed: alive with
   method). */
SemLockObject *cmp_semlock_bound(PyObject *method, int acquire);

/* None, after a release that may have woken another process: the pending
   signal handlers run first.  The woken process often runs at once on this
   CPU, and what it does next may be to signal us (Process.interrupt()
   right after Event.wait() returns).  Delivered while we are still in the
   release, that signal must be handled here, as the eval loop would after
   the call: left pending, it is lost across the caller's next blocking call
   (time.sleep() does not look for pending signals before it sleeps).  This
   narrows CPython's own window (3.14+: from the last signal check to the
   sleep) without closing it: a signal that lands after this check and
   before the sleep is still slept through, and a fast wake-up makes that
   likelier (the stdlib's test_interrupt fails that way now and then under
   the forkserver; the stdlib's slower wake-up hides it). */
PyObject *cmp_semlock_released(void);

#endif /* CMP_SEMLOCK_H */
