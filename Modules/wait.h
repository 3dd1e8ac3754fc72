/*
 * wait.h -- the one deadline and the one sliced-wait loop.
 *
 * Every blocking call of the module waits the same way: a first try with
 * the GIL held (the caller's fast path), then waits with the GIL released
 * of at most CMP_WAIT_SLICE each, towards a deadline on the monotonic
 * clock, running signal handlers (PyErr_CheckSignals) between slices so
 * that Ctrl-C works everywhere and EINTR is retried after them.
 */
#ifndef CMP_WAIT_H
#define CMP_WAIT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* When a wait ends: `forever`, or at `at` on cmp_monotonic()'s clock. */
typedef struct {
    double at;
    int forever;
} cmp_deadline;

/* The deadline `seconds` from now, or none (forever) when !has_timeout. */
cmp_deadline cmp_deadline_in(int has_timeout, double seconds);

/* The deadline of a Python timeout: None (forever) or a number of seconds
   (negative counts as 0).  0, or -1 with an exception set. */
int cmp_deadline_parse(PyObject *timeout, cmp_deadline *out);

/* Seconds left (>= 0), or a negative number for a wait forever. */
double cmp_deadline_left(const cmp_deadline *d);

/* Whether the deadline has passed (never for forever). */
int cmp_deadline_passed(const cmp_deadline *d);

/* The next slice to wait: the time left, capped at CMP_WAIT_SLICE; a
   negative value once the deadline has passed. */
double cmp_deadline_slice(const cmp_deadline *d);

/* One slice of a wait, run WITHOUT the GIL (it must not touch Python
   objects): wait at most `slice` seconds.  Returns 1 when the wait is
   over (what it waited for happened), 0 to wait on (the slice passed, or a
   signal interrupted it), or -1 with *err set to a platform error code. */
typedef int (*cmp_wait_step)(void *ctx, double slice, int *err);

/* Call step() slice by slice until it returns 1 (-> 1), the deadline
   passes (-> 0), it fails (-> -1, the error raised as OSError) or a signal
   handler raises (-> -1).  The GIL is released around each step. */
int cmp_wait_sliced(const cmp_deadline *d, cmp_wait_step step, void *ctx);

/* The same, except that step() runs at least once: with a slice of 0 when
   the deadline has already passed (a zero timeout still makes one try).
   For waits whose first try is itself a GIL-free system call. */
int cmp_wait_sliced_once(const cmp_deadline *d, cmp_wait_step step, void *ctx);

#endif /* CMP_WAIT_H */
