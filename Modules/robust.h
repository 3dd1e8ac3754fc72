/*
 * robust.h -- owner records: how a lock whose holder died is recovered.
 *
 * A named semaphore has no owner: when a process dies holding a Lock, the
 * unit it took is gone and every waiter waits for ever (the stdlib's
 * behaviour).  An owner record is a word of shared memory beside the
 * semaphore (a block of the locks' own heap, shared as Value's memory is)
 * naming the holder: its pid and the low bits of its start time, so that a
 * later process given the same pid is not taken for it.  The holder writes
 * the record after it takes the unit and clears it before it gives the unit
 * back; a waiter that finds the recorded holder gone (ended, a zombie, or
 * its pid now another process's) claims the record with one compare-and-
 * swap and holds the lock in its place: the dead holder's unit becomes the
 * waiter's, as a robust POSIX mutex passes to the next locker with
 * EOWNERDEAD.  Only one waiter can win the swap.
 *
 * What it cannot see: a holder that dies between taking the unit and
 * writing the record, or between clearing it and giving the unit back (a
 * few instructions), leaves the lock taken with no owner named, as before.
 *
 * Plain C, no Python objects: the checks run with the GIL released.
 */
#ifndef CMP_ROBUST_H
#define CMP_ROBUST_H

#include <stdint.h>

#include "atomic.h"

/* The record as it lies in shared memory (16 bytes, 8-aligned). */
typedef struct {
    uint64_t owner; /* cmp_proc_self_tag() of the holder; 0: none known */
    uint64_t state; /* the lock user's: a queue's stream position
                       (queue_robust.c); zero otherwise */
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
