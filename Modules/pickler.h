/*
 * pickler.h -- the one kept ForkingPickler, shared by connections and
 * queues (pickler.c).
 *
 * Building a ForkingPickler (a file, the pickler, its dispatch-table
 * snapshot made in Python) costs more than pickling a small object, so a
 * sender keeps one, writing into a sink that keeps the chunks it is given,
 * and only clears its memo between messages.  A connection keeps one per
 * interpreter (module state), a queue one per queue object.
 *
 * The invalidation rule: the pickler copied the class's two reducer tables
 * (_copyreg_dispatch_table, _extra_reducers) when it was made, so it is
 * rebuilt when either changed size or when the class's _generation (which
 * register() bumps) moved.  A class without those tables (or without
 * _generation) is never kept: there would be nothing to tell a stale one
 * by.  The re-entrancy guard: a kept pickler in use (another thread whose
 * reducer let go of the GIL, or a send made from inside a reducer) is
 * `busy`, and such calls pickle another way (the caller's dumps()).
 */
#ifndef CMP_PICKLER_H
#define CMP_PICKLER_H

#include "cmp.h"

/* A kept pickler of class `cls` in *out (a new reference), or *out = NULL
   when instances of cls cannot be kept (cls None, or without the reducer
   tables).  0, or -1 with an exception set. */
int cmp_pickler_make(cmp_state *st, PyObject *cls, PyObject **out);

/* Pickle obj with the kept pickler `kp` (NULL allowed).  1: done, the
   pickle's chunks (a list of bytes, borrowed) in *chunks until
   cmp_pickler_release(kp); 0: the kept pickler cannot be used now (none,
   busy, stale and not rebuildable): pickle another way, nothing to
   release; -1: pickling failed, exception set, nothing to release. */
int cmp_pickler_dump(PyObject *kp, PyObject *obj, PyObject **chunks);

/* Done with the chunks of a successful cmp_pickler_dump: the sink is
   emptied, the memo forgotten (a pickler that cannot forget is not kept),
   and the pickler is free again.  Keeps any exception set. */
void cmp_pickler_release(PyObject *kp);

/* obj pickled as one bytes-like object: by the kept pickler `kp` when it
   can be used, else by dumps(obj).  A new reference, or NULL with an
   exception set. */
PyObject *cmp_pickler_dumps(PyObject *kp, PyObject *dumps, PyObject *obj);

/* Creates the kept pickler's type (module exec). */
int cmp_pickler_exec(PyObject *module);

#endif /* CMP_PICKLER_H */
