/* spin.c -- the adaptive spin before a blocking wait (see spin.h). */
#include "cmp.h"
#include "spin.h"

static int spin_cpus;           /* cmp_cpu_count(), read at the first wait */

int
cmp_spin_possible(void)
{
    if (spin_cpus == 0) {
        spin_cpus = cmp_cpu_count();
    }
    return spin_cpus > 1;
}

double
cmp_spin_budget(cmp_spin *s)
{
    if (!cmp_spin_possible()) {
        return 0.0;
    }
    if (s->budget > 0.0f) {
        return s->budget;
    }
    if (s->rest > 0) {
        s->rest--;
        return 0.0;
    }
    return CMP_SPIN_MAX;
}

void
cmp_spin_result(cmp_spin *s, double budget, int caught)
{
    if (caught) {
        s->budget = (float)CMP_SPIN_MAX;
    }
    else if (budget / 2 >= CMP_SPIN_MIN) {
        s->budget = (float)(budget / 2);
    }
    else {
        s->budget = 0.0f;
        s->rest = CMP_SPIN_RETRY;
    }
}

int
cmp_spin_until(double budget, int (*check)(void *arg, int *ready), void *arg,
               int *ready)
{
    const double deadline = cmp_monotonic() + budget;

    for (;;) {
        int err = check(arg, ready);
        if (err != 0 || *ready || cmp_monotonic() >= deadline) {
            return err;
        }
        cmp_yield();
    }
}
