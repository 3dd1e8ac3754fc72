/*
 * args.c -- the one argument parser of _cmultiprocessing, and the few value
 * converters the concern files share.
 *
 * A function describes its parameters once, in a static cmp_argspec:
 *
 *     static const char *const send_names[] = {"buf", "offset", "size"};
 *     static const cmp_argspec send_spec =
 *         CMP_ARGSPEC("send_bytes", send_names, 1);
 *
 * and binds what it was called with into an array of borrowed references,
 * one per name, NULL where the caller gave nothing:
 *
 *     PyObject *a[3];
 *     if (cmp_parse_args(&send_spec, args, nargs, kwnames, a) < 0) ...
 *
 * METH_FASTCALL | METH_KEYWORDS methods use cmp_parse_args (keywords as a
 * vectorcall kwnames tuple); tp_new / tp_init slots use cmp_parse_tuple
 * (a tuple and a dict).  The messages are CPython's own for the same
 * mistakes, so a caller sees what a built-in function would say.
 */
#include "cmp.h"

/* Index of the parameter called `key`, or -1. */
static Py_ssize_t
find_name(const cmp_argspec *spec, PyObject *key)
{
    for (Py_ssize_t i = 0; i < spec->nnames; i++) {
        if (PyUnicode_CompareWithASCIIString(key, spec->names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static int
too_many(const cmp_argspec *spec, Py_ssize_t given)
{
    if (spec->nnames == 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments (%zd given)",
                     spec->fname, given);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %zd arguments (%zd given)",
                     spec->fname, spec->nnames, given);
    }
    return -1;
}

/* Put `value`, passed as keyword `key`, in its slot. */
static int
bind_keyword(const cmp_argspec *spec, PyObject *key, PyObject *value,
             PyObject **out)
{
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "%s() keywords must be strings",
                     spec->fname);
        return -1;
    }
    Py_ssize_t slot = find_name(spec, key);
    if (slot < 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s() got an unexpected keyword argument '%U'",
                     spec->fname, key);
        return -1;
    }
    if (out[slot] != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%s() got multiple values for argument '%s'", spec->fname,
                     spec->names[slot]);
        return -1;
    }
    out[slot] = value;
    return 0;
}

/* Fill the positional slots; the rest start empty. */
static int
bind_positional(const cmp_argspec *spec, PyObject *const *pos, Py_ssize_t npos,
                PyObject **out)
{
    if (npos > spec->nnames) {
        return too_many(spec, npos);
    }
    for (Py_ssize_t i = 0; i < spec->nnames; i++) {
        out[i] = i < npos ? pos[i] : NULL;
    }
    return 0;
}

static int
check_required(const cmp_argspec *spec, PyObject *const *out)
{
    for (Py_ssize_t i = 0; i < spec->nrequired; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s' (pos %zd)",
                         spec->fname, spec->names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

int
cmp_parse_args(const cmp_argspec *spec, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    if (bind_positional(spec, args, nargs, out) < 0) {
        return -1;
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            if (bind_keyword(spec, PyTuple_GET_ITEM(kwnames, k),
                             args[nargs + k], out) < 0) {
                return -1;
            }
        }
    }
    return check_required(spec, out);
}

int
cmp_parse_tuple(const cmp_argspec *spec, PyObject *args, PyObject *kwds,
                PyObject **out)
{
    if (bind_positional(spec, &PyTuple_GET_ITEM(args, 0),
                        PyTuple_GET_SIZE(args), out) < 0) {
        return -1;
    }
    if (kwds != NULL) {
        Py_ssize_t where = 0;
        PyObject *key, *value;
        while (PyDict_Next(kwds, &where, &key, &value)) {
            if (bind_keyword(spec, key, value, out) < 0) {
                return -1;
            }
        }
    }
    return check_required(spec, out);
}

/* ------------------------------------------------------------------ */
/* Converters.                                                         */

int
cmp_arg_int(PyObject *obj, const char *what, int *out)
{
    if (!PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an integer, not %.100s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *idx = PyNumber_Index(obj);
    if (idx == NULL) {
        return -1;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || v < INT_MIN || v > INT_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s is out of range", what);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int
cmp_arg_ssize(PyObject *obj, Py_ssize_t *out)
{
    Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = v;
    return 0;
}

int
cmp_arg_opt_ssize(PyObject *obj, Py_ssize_t dflt, Py_ssize_t *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = dflt;
        return 0;
    }
    return cmp_arg_ssize(obj, out);
}

int
cmp_arg_bool(PyObject *obj, int dflt, int *out)
{
    if (obj == NULL) {
        *out = dflt;
        return 0;
    }
    /* the two singletons without a call */
    if (obj == Py_True || obj == Py_False) {
        *out = obj == Py_True;
        return 0;
    }
    int v = PyObject_IsTrue(obj);
    if (v < 0) {
        return -1;
    }
    *out = v;
    return 0;
}

int
cmp_arg_handle(PyObject *obj, const char *what, cmp_handle_t *out)
{
    PyObject *idx = PyNumber_Index(obj);
    if (idx == NULL) {
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || cmp_io_handle_from_value(v, out) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %R", what, obj);
        return -1;
    }
    return 0;
}

int
cmp_arg_fileno(PyObject *obj, const char *what, cmp_handle_t *out)
{
    if (PyIndex_Check(obj)) {
        return cmp_arg_handle(obj, what, out);
    }
    PyObject *meth = PyObject_GetAttrString(obj, "fileno");
    if (meth == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "expected an integer handle or an object with a "
                     "fileno() method, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *num = PyObject_CallNoArgs(meth);
    Py_DECREF(meth);
    if (num == NULL) {
        return -1;
    }
    int rc = cmp_arg_handle(num, what, out);
    Py_DECREF(num);
    return rc;
}

PyObject *
cmp_handle_to_int(cmp_handle_t h)
{
    return PyLong_FromLongLong(cmp_io_handle_value(h));
}

PyObject *
cmp_list_of(Py_ssize_t n, PyObject *(*item)(const void *, Py_ssize_t),
            const void *ctx)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = item(ctx, i);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

int
cmp_check_positional(const char *fname, Py_ssize_t nargs, Py_ssize_t min,
                     Py_ssize_t max)
{
    if (nargs >= min && nargs <= max) {
        return 0;
    }
    if (min == max) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes exactly %zd argument%s (%zd given)", fname,
                     min, min == 1 ? "" : "s", nargs);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from %zd to %zd arguments (%zd given)", fname,
                     min, max, nargs);
    }
    return -1;
}
