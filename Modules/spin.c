/* spin.c -- the adaptive spin before a blocking wait (see spin.h), and
   _cmultiprocessing.spin_info(), which says how it is set. */
#include "cmp.h"
#include "robust.h" /* cmp_atomic_load64 / store64 */
#include "spin.h"

#include <stdlib.h>

/* Process-wide, plain C values: set by cmp_spin_exec() at import (with
   the GIL; every interpreter writes the same values), read by waits. */
static int spin_cpus;           /* cmp_cpu_count() */
static double spin_max = CMP_SPIN_MAX; /* CMP_SPIN, in seconds */

/* The last runnable-count reading: (milliseconds on the monotonic clock
   + 1) << 1 | crowded; 0 before the first.  One atomic word, so that
   threads waiting without the GIL never see half an update. */
static uint64_t spin_load;

int
cmp_spin_possible(void)
{
    if (spin_cpus == 0) {
        spin_cpus = cmp_cpu_count();
    }
    return spin_cpus > 1 && spin_max > 0.0;
}

/* Read the runnable count now: 1 crowded, 0 not (or cannot tell); the
   count into *runnable, -1 when unknown. */
static int
spin_read_load(int *runnable)
{
    int count = 0;
    *runnable = -1;
    if (cmp_runnable_threads(&count) != 0) {
        return 0;
    }
    *runnable = count;
    if (spin_cpus == 0) {
        spin_cpus = cmp_cpu_count();
    }
    return count > spin_cpus;
}

int
cmp_spin_crowded(void)
{
    const uint64_t now = (uint64_t)(cmp_monotonic() * 1000.0) + 1;
    const uint64_t state = cmp_atomic_load64(&spin_load);
    if (state != 0 && now - (state >> 1) < CMP_SPIN_LOAD_EVERY * 1000.0) {
        return (int)(state & 1);
    }
    int runnable;
    const int crowded = spin_read_load(&runnable);
    cmp_atomic_store64(&spin_load, now << 1 | (uint64_t)crowded);
    return crowded;
}

double
cmp_spin_budget(cmp_spin *s)
{
    if (!cmp_spin_possible() || cmp_spin_crowded()) {
        return 0.0;
    }
    if (s->budget > 0.0f) {
        return s->budget;
    }
    if (s->rest > 0) {
        s->rest--;
        return 0.0;
    }
    return spin_max;
}

void
cmp_spin_result(cmp_spin *s, double budget, int caught)
{
    if (caught) {
        s->budget = (float)spin_max;
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

/* CMP_SPIN as seconds: unset or empty, the default; else a whole number
   of microseconds, at most 1 s.  -1.0 for a value that is not one. */
static double
spin_parse_env(const char *text)
{
    if (text == NULL || text[0] == '\0') {
        return CMP_SPIN_MAX;
    }
    char *end;
    long us = strtol(text, &end, 10);
    if (*end != '\0' || us < 0 || us > 1000000) {
        return -1.0;
    }
    return (double)us * 1e-6;
}

static PyObject *
spin_info_func(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    int runnable;
    int crowded;
    Py_BEGIN_ALLOW_THREADS
    crowded = spin_read_load(&runnable);
    Py_END_ALLOW_THREADS
    const int possible = cmp_spin_possible();
    PyObject *count = runnable < 0 ? Py_NewRef(Py_None)
                                   : PyLong_FromLong(runnable);
    if (count == NULL) {
        return NULL;
    }
    return Py_BuildValue(
        "{s:d,s:i,s:N,s:O,s:O}", "max", possible ? spin_max : 0.0, "cpus",
        spin_cpus, "runnable", count, "crowded", crowded ? Py_True : Py_False,
        "spinning", (possible && !crowded) ? Py_True : Py_False);
}

static PyMethodDef spin_functions[] = {
    {"spin_info", spin_info_func, METH_NOARGS,
     "spin_info() -> dict\n\n"
     "How waits spin in this process: max (the longest spin in seconds, "
     "0.0 when they never spin: CMP_SPIN=0 or one CPU), cpus, runnable "
     "(threads ready to run on the machine now, None where the OS cannot "
     "tell), crowded (more of them than CPUs: waits do not spin now) and "
     "spinning (whether a wait would spin now)."},
    {NULL, NULL, 0, NULL},
};

int
cmp_spin_exec(PyObject *module)
{
    const char *text = getenv(CMP_SPIN_ENV);
    double max = spin_parse_env(text);
    if (max < 0.0) {
        /* a typo must not make the package fail to import */
        if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                             "%s=%.100s is not a whole number of "
                             "microseconds from 0 to 1000000: ignored",
                             CMP_SPIN_ENV, text) < 0) {
            return -1;
        }
        max = CMP_SPIN_MAX;
    }
    spin_max = max;
    spin_cpus = cmp_cpu_count();
    return PyModule_AddFunctions(module, spin_functions);
}
