/*
 * compat.c -- the out-of-line parts of compat.h.
 */
#include "cmp.h"

void
cmp_exc_restore_under(cmp_saved_exc *s)
{
    if (!PyErr_Occurred()) {
        cmp_exc_restore(s);
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (s->exc != NULL) {
        PyObject *now = PyErr_GetRaisedException();
        PyException_SetContext(now, s->exc); /* steals s->exc */
        PyErr_SetRaisedException(now);
        s->exc = NULL;
    }
#else
    Py_CLEAR(s->type);
    Py_CLEAR(s->value);
    Py_CLEAR(s->tb);
#endif
}

PyObject *
cmp_exc_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL && v != NULL) {
        PyException_SetTraceback(v, tb);
    }
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}
