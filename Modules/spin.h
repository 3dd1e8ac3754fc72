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
 * Nothing spins either while the machine is oversubscribed: more threads
 * ready to run than it has CPUs (Linux: /proc/loadavg's runnable count,
 * which counts the waiter itself, read at most every CMP_SPIN_LOAD_EVERY
 * and shared by every wait of the process).  There a spinning waiter --
 * even one that yields -- takes CPU time from a thread that has work, and
 * a peer that is not running cannot answer within the budget anyway.  A
 * read costs about 6 us; once every 10 ms is at most 0.06% of a CPU, and
 * it is only made by waits that would spin.  Measured on 2 CPUs, two
 * CPU-bound processes beside a Pipe ping-pong whose replier works 50 us a
 * message: 280 round trips a second before the check (each spinner held
 * a CPU its peer was queued for), 5,000-7,500 with it; on an idle machine
 * the count stays at or under the CPUs and nothing changes.
 *
 * The environment variable CMP_SPIN, read when the module is imported,
 * sets the longest spin in microseconds (default 100); CMP_SPIN=0 turns
 * spinning off for every wait of the process (and of its children, which
 * inherit the environment).
 *
 * The state is two small fields in the waiting object, zero-initialised
 * (tp_alloc) to mean "start with the full budget".  It is not shared
 * between threads in any way that matters: a racy update only changes how
 * long the next wait spins.
 */
#ifndef CMP_SPIN_H
#define CMP_SPIN_H

#define CMP_SPIN_MAX 100e-6     /* seconds: the default longest spin */
#define CMP_SPIN_MIN 2e-6
#define CMP_SPIN_RETRY 32
#define CMP_SPIN_LOAD_EVERY 0.01 /* seconds between runnable-count reads */
#define CMP_SPIN_ENV "CMP_SPIN" /* the longest spin in us; 0: none */

typedef struct {
    float budget;               /* seconds; 0: not spinning */
    unsigned char rest;         /* waits left before trying again */
} cmp_spin;

/* Whether spinning can help here at all (more than one CPU, and not
   turned off by CMP_SPIN=0). */
int cmp_spin_possible(void);

/* Whether the machine has more threads ready to run than CPUs now (read
   at most every CMP_SPIN_LOAD_EVERY; 0 where the OS cannot tell). */
int cmp_spin_crowded(void);

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
