/*
 * compat.h -- the one place that bridges the CPython versions this module
 * builds for (3.11 to 3.15).  Concern files include it (through cmp.h) and
 * never test PY_VERSION_HEX themselves for the things below.
 */
#ifndef CMP_COMPAT_H
#define CMP_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Member flags under their 3.12 names on 3.11 too. */
#ifndef Py_T_PYSSIZET
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_T_OBJECT_EX T_OBJECT_EX
#  define Py_READONLY READONLY
#endif

/* An exception kept aside while cleanup runs (PyErr_GetRaisedException
   from 3.12, PyErr_Fetch before). */
typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} cmp_saved_exc;

/* Take the raised exception (if any) aside; no exception is set after. */
static inline void
cmp_exc_save(cmp_saved_exc *s)
{
#if PY_VERSION_HEX >= 0x030C0000
    s->exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&s->type, &s->value, &s->tb);
#endif
}

/* Put the saved exception back as it was (none if none was saved),
   replacing whatever is set now. */
static inline void
cmp_exc_restore(cmp_saved_exc *s)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(s->exc);
    s->exc = NULL;
#else
    PyErr_Restore(s->type, s->value, s->tb);
    s->type = s->value = s->tb = NULL;
#endif
}

/* Put the saved exception back as a Python `finally` would: if the cleanup
   raised one of its own, that one wins, with the saved one as its context
   (3.12 on; before, the saved one is dropped). */
void cmp_exc_restore_under(cmp_saved_exc *s);

/* The raised exception as one object, normalized and carrying its
   traceback; a new reference, and no exception is set after.  NULL if
   none was set. */
PyObject *cmp_exc_take(void);

#endif /* CMP_COMPAT_H */
