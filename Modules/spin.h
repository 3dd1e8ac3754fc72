/*
 * spin.h -- checking for a peer's answer for a few microseconds before
 * going to sleep on it.
 *
 * A message or a release that arrives within some tens of microseconds is
 * cheaper to catch by checking for it than by sleeping: a sleeping waiter
 * must be woken by the other process (and, on a virtual machine, its idle
 * CPU by an interrupt), which costs more than a whole exchange in C.  So a
 * wait first checks, with the GIL released, for up to a per-object budget
 * of time, yielding the CPU between checks to any other runnable thread.
 *
 * The budget adapts per object (connection, queue, semaphore): each time
 * it runs out before the event came, it halves, down to nothing; an object
 * that has stopped spinning tries the full budget again every
 * CMP_SPIN_RETRY waits, so that a peer that speeds up is noticed.  Nothing
 * spins on a machine with one CPU, where the peer cannot run meanwhile.
 *
 * The state is two small fields in the waiting object, zero-initialised
 * (tp_alloc) to mean "start with the full budget".  It is not shared
 * between threads in any way that matters: a racy update only changes how
 * long the next wait spins.
 */
#ifndef CMP_SPIN_H
#define CMP_SPIN_H

#define CMP_SPIN_MAX 100e-6     /* seconds */
#define CMP_SPIN_MIN 2e-6
#define CMP_SPIN_RETRY 32

typedef struct {
    float budget;               /* seconds; 0: not spinning */
    unsigned char rest;         /* waits left before trying again */
} cmp_spin;

/* Whether spinning can help here at all (more than one CPU). */
int cmp_spin_possible(void);

/* The time to spin before the next wait, 0.0 for none.  GIL not needed. */
double cmp_spin_budget(cmp_spin *s);

/* Record how a spin of `budget` seconds ended: `caught` when the event came
   during it. */
void cmp_spin_result(cmp_spin *s, double budget, int caught);

/* Call check(arg, &ready) until it sets ready, fails (its nonzero result is
   returned), or `budget` seconds have passed; yields the CPU between calls.
   Runs without the GIL; check must not touch Python objects. */
int cmp_spin_until(double budget, int (*check)(void *arg, int *ready),
                   void *arg, int *ready);

#endif /* CMP_SPIN_H */
