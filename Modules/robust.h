/*
 * robust.h -- owner records: how a lock whose holder died is recovered.
 *
 * A named semaphore has no owner: when a process dies holding a Lock, the
 * unit it took is gone and every waiter waits for ever (the stdlib's
 * behaviour).  An owner record is a word of shared memory beside the
 * semaphore (a block of the locks' own heap, shared as Value's memory is)
 * naming the holder: its pid and the low bits of its start time, so that a
 * later process given the same pid is not taken for it.  A waiter that
 * finds the recorded holder gone (ended, a zombie, or its pid now another
 * process's) claims the record with one compare-and-swap and holds the lock
 * in its place, as a robust POSIX mutex passes to the next locker with
 * EOWNERDEAD.  Only one waiter can win the swap.
 *
 * The record is the lock.  Taking it is one compare-and-swap of the owner
 * word from 0 to the taker's tag, and giving it back one store of 0, so a
 * holder is named from the instant it holds the lock to the instant it
 * lets go: there is no moment, however short, in which a process killed
 * holds the lock without the record naming it.  (When the semaphore's unit
 * was the lock and the record was written after taking it, a producer
 * SIGKILLed at random while a queue moved messages hit that gap in about
 * one kill in ten, and the queue hung for good.)  The semaphore is then
 * only where waiters sleep: a waiter counts itself in `waiters`, looks at
 * the owner word once more, and sleeps on the semaphore; a holder that
 * lets go with waiters counted posts it, once per wake-up: `woken` says a
 * post is on its way (made and not yet taken, or taken by a waiter not
 * yet back at the owner word), and a release that finds it set posts
 * nothing.  (When every release with a waiter counted posted, a lock
 * passed back and forth between two busy processes posted at each
 * release until the woken waiter ran: two consumers of one queue made
 * 45k-69k futex calls per million messages, one made 57.)  A waiter
 * clears `woken` when its sleep ends, before it looks at the owner word
 * again, and so does one whose slice passed: a waiter killed between its
 * wake-up and that look costs the others at most a slice's wait.  A post
 * nobody takes makes one later waiter look again for nothing; a waiter
 * killed while counted makes releases post for nothing.  None of these
 * loses a wake-up.
 *
 * Plain C, no Python objects: the checks run with the GIL released.
 */
#ifndef CMP_ROBUST_H
#define CMP_ROBUST_H

#include <stdint.h>

#include "atomic.h"
#include "platform/platform.h"

/* The record as it lies in shared memory (24 bytes, 8-aligned). */
typedef struct {
    uint64_t owner;   /* cmp_proc_self_tag() of the holder; 0: free */
    uint64_t state;   /* the lock user's: a queue's stream position
                         (queue_robust.c); zero otherwise */
    uint32_t waiters; /* processes counted as asleep on the semaphore */
    uint32_t woken;   /* 1: a post is on its way to a waiter */
} cmp_owner_rec;

static inline uint64_t
cmp_owner_load(const cmp_owner_rec *r)
{
    return cmp_atomic_load64(&r->owner);
}
static inline void
cmp_owner_store(cmp_owner_rec *r, uint64_t v)
{
    cmp_atomic_store64(&r->owner, v);
}
static inline int
cmp_owner_swap(cmp_owner_rec *r, uint64_t expected, uint64_t v)
{
    return cmp_atomic_swap64(&r->owner, expected, v);
}

/* Take the lock if it is free: 1 taken (the record names `me`), 0 not. */
static inline int
cmp_owner_try(cmp_owner_rec *r, uint64_t me)
{
    return cmp_atomic_swap64(&r->owner, 0, me);
}

/* Count the caller in or out of the waiters before and after it sleeps on
   the lock's semaphore.  Counting in is followed by a full fence: the
   look at the owner word that comes next is not made before the count is
   seen (the release side stores, fences, then reads the count). */
static inline void
cmp_owner_wait_begin(cmp_owner_rec *r)
{
    cmp_atomic_add32(&r->waiters, 1);
    cmp_atomic_fence();
}
static inline void
cmp_owner_wait_end(cmp_owner_rec *r)
{
    cmp_atomic_add32(&r->waiters, -1);
}

/* A waiter's sleep on the semaphore ended with a post taken or the slice
   passed: releases may post again.  (An exchange, a full barrier: the look
   at the owner word that follows sees the release whose post this was.) */
static inline void
cmp_owner_woke(cmp_owner_rec *r)
{
    (void)cmp_atomic_xchg32(&r->woken, 0);
}

/* Let go of the lock: the owner word back to 0, then one post of the
   semaphore `wake` if a waiter is counted and no post is on its way.  0,
   or a platform error code of the post (a post that finds one pending
   already is not an error). */
int cmp_owner_give(cmp_owner_rec *r, cmp_sem_t wake);

/* The pid part of a tag. */
static inline long
cmp_owner_pid(uint64_t tag)
{
    return (long)(tag >> 32);
}

/* If the recorded holder is gone, make `me` the holder: *claimed = 1 and
   *dead = the gone holder's tag; otherwise *claimed = 0 (no holder
   recorded, it lives, or another waiter claimed it first).  Returns 0, or
   a platform error code when the holder could not be looked at. */
int cmp_owner_claim_if_gone(cmp_owner_rec *r, uint64_t me, int *claimed,
                            uint64_t *dead);

#endif /* CMP_ROBUST_H */
