/*
 * wait.c -- the deadline and the sliced-wait loop of wait.h.
 */
#include "cmp.h"

cmp_deadline
cmp_deadline_in(int has_timeout, double seconds)
{
    cmp_deadline d;
    d.forever = !has_timeout;
    d.at = has_timeout ? cmp_monotonic() + (seconds > 0.0 ? seconds : 0.0)
                       : 0.0;
    return d;
}

int
cmp_deadline_parse(PyObject *timeout, cmp_deadline *out)
{
    int has = 0;
    double seconds = 0.0;
    if (cmp_parse_timeout(timeout, &has, &seconds) < 0) {
        return -1;
    }
    *out = cmp_deadline_in(has, seconds);
    return 0;
}

double
cmp_deadline_left(const cmp_deadline *d)
{
    if (d->forever) {
        return -1.0;
    }
    double left = d->at - cmp_monotonic();
    return left > 0.0 ? left : 0.0;
}

int
cmp_deadline_passed(const cmp_deadline *d)
{
    return !d->forever && cmp_monotonic() >= d->at;
}

double
cmp_deadline_slice(const cmp_deadline *d)
{
    if (d->forever) {
        return CMP_WAIT_SLICE;
    }
    double left = d->at - cmp_monotonic();
    if (left <= 0.0) {
        return -1.0;
    }
    return left < CMP_WAIT_SLICE ? left : CMP_WAIT_SLICE;
}

static int
wait_loop(const cmp_deadline *d, cmp_wait_step step, void *ctx, int first)
{
    for (;; first = 0) {
        double slice = cmp_deadline_slice(d);
        if (slice < 0.0) {
            if (!first) {
                return 0;
            }
            slice = 0.0;
        }
        int r, err = 0;
        Py_BEGIN_ALLOW_THREADS
        r = step(ctx, slice, &err);
        Py_END_ALLOW_THREADS
        if (r > 0) {
            return 1;
        }
        if (r < 0) {
            cmp_raise_oserror(err);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

int
cmp_wait_sliced(const cmp_deadline *d, cmp_wait_step step, void *ctx)
{
    return wait_loop(d, step, ctx, 0);
}

int
cmp_wait_sliced_once(const cmp_deadline *d, cmp_wait_step step, void *ctx)
{
    return wait_loop(d, step, ctx, 1);
}
