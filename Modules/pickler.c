/*
 * pickler.c -- the one kept ForkingPickler (see pickler.h): its sink, the
 * rule that tells a stale one, and the guard against re-entrant use.
 *
 * The kept pickler is a small GC object, _cmultiprocessing._KeptPickler.
 * It is its own sink: the pickler is made with it as its file, and its
 * write() keeps each chunk (a bytes object as it is, anything else -- a
 * bytearray that may change before the message goes out -- copied).
 * Its owner (the module state for connections, a queue object for that
 * queue) holds a reference; a caller holds one more while it pickles, so
 * that an owner rebound by a reducer cannot free it midway.
 */
#include "pickler.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *chunks;       /* list of bytes: what the pickler wrote */
    PyObject *cls;          /* the pickler class */
    PyObject *copyreg;      /* the two reducer tables its instances copy */
    PyObject *extra;
    PyObject *dump;         /* bound methods of the pickler, or NULL */
    PyObject *clear_memo;
    long generation;        /* cls._generation when it was made */
    Py_ssize_t copyreg_size, extra_size;
    int busy;
} KeptPickler;

static PyObject *
kept_write(PyObject *op, PyObject *data)
{
    KeptPickler *kp = (KeptPickler *)op;
    PyObject *b = PyBytes_CheckExact(data) ? Py_NewRef(data)
                                           : PyBytes_FromObject(data);
    if (b == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    int r = PyList_Append(kp->chunks, b);
    Py_DECREF(b);
    return r < 0 ? NULL : PyLong_FromSsize_t(n);
}

static int
kept_traverse(PyObject *op, visitproc visit, void *arg)
{
    KeptPickler *kp = (KeptPickler *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(kp->chunks);
    Py_VISIT(kp->cls);
    Py_VISIT(kp->copyreg);
    Py_VISIT(kp->extra);
    Py_VISIT(kp->dump);
    Py_VISIT(kp->clear_memo);
    return 0;
}

/* Forget the pickler itself (it is made again when next needed). */
static void
kept_drop(KeptPickler *kp)
{
    Py_CLEAR(kp->dump);
    Py_CLEAR(kp->clear_memo);
}

static int
kept_clear(PyObject *op)
{
    KeptPickler *kp = (KeptPickler *)op;
    kept_drop(kp);
    Py_CLEAR(kp->chunks);
    Py_CLEAR(kp->cls);
    Py_CLEAR(kp->copyreg);
    Py_CLEAR(kp->extra);
    return 0;
}

static void
kept_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)kept_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef kept_methods[] = {
    {"write", kept_write, METH_O,
     "write($self, chunk, /)\n--\n\nKeep one chunk of the pickle."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot kept_slots[] = {
    {Py_tp_doc, "A ForkingPickler kept between messages, and its sink."},
    {Py_tp_dealloc, kept_dealloc},
    {Py_tp_traverse, kept_traverse},
    {Py_tp_clear, kept_clear},
    {Py_tp_methods, kept_methods},
    {0, NULL},
};

static PyType_Spec kept_spec = {
    .name = "_cmultiprocessing._KeptPickler",
    .basicsize = sizeof(KeptPickler),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = kept_slots,
};

int
cmp_pickler_make(cmp_state *st, PyObject *cls, PyObject **out)
{
    *out = NULL;
    if (cls == NULL || cls == Py_None) {
        return 0;
    }
    PyObject *copyreg = PyObject_GetAttrString(cls, "_copyreg_dispatch_table");
    PyObject *extra = copyreg ? PyObject_GetAttrString(cls, "_extra_reducers")
                              : NULL;
    if (extra == NULL || !PyDict_Check(copyreg) || !PyDict_Check(extra)) {
        PyErr_Clear();
        Py_XDECREF(copyreg);
        Py_XDECREF(extra);
        return 0;
    }
    PyTypeObject *tp = (PyTypeObject *)st->KeptPickler_type;
    KeptPickler *kp = (KeptPickler *)tp->tp_alloc(tp, 0);
    if (kp == NULL) {
        Py_DECREF(copyreg);
        Py_DECREF(extra);
        return -1;
    }
    kp->cls = Py_NewRef(cls);
    kp->copyreg = copyreg;
    kp->extra = extra;
    kp->chunks = PyList_New(0);
    if (kp->chunks == NULL) {
        Py_DECREF(kp);
        return -1;
    }
    *out = (PyObject *)kp;
    return 0;
}

/* cls._generation, or -1 when it has none (or not an int). */
static long
kept_generation(PyObject *cls)
{
    PyObject *g = PyObject_GetAttrString(cls, "_generation");
    long v = -1;
    if (g != NULL && PyLong_Check(g)) {
        v = PyLong_AsLong(g);
    }
    Py_XDECREF(g);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        v = -1;
    }
    return v;
}

/* 1 when a current pickler is there (made now if needed), else 0. */
static int
kept_ready(KeptPickler *kp)
{
    if (kp->busy) {
        return 0;
    }
    long gen = kept_generation(kp->cls);
    Py_ssize_t ncopy = PyDict_Size(kp->copyreg);
    Py_ssize_t nextra = PyDict_Size(kp->extra);
    if (gen == -1) {
        kept_drop(kp);
        return 0;
    }
    if (kp->dump != NULL && gen == kp->generation &&
        ncopy == kp->copyreg_size && nextra == kp->extra_size) {
        return 1;
    }
    kept_drop(kp); /* stale: the tables changed */
    PyObject *pickler = PyObject_CallOneArg(kp->cls, (PyObject *)kp);
    if (pickler == NULL) {
        PyErr_Clear(); /* dumps() will make one and say what is wrong */
        return 0;
    }
    kp->dump = PyObject_GetAttrString(pickler, "dump");
    kp->clear_memo = kp->dump ? PyObject_GetAttrString(pickler, "clear_memo")
                              : NULL;
    Py_DECREF(pickler);
    if (kp->clear_memo == NULL) {
        PyErr_Clear();
        kept_drop(kp);
        return 0;
    }
    kp->generation = gen;
    kp->copyreg_size = ncopy;
    kp->extra_size = nextra;
    return 1;
}

static void
kept_empty_sink(KeptPickler *kp)
{
    if (kp->chunks != NULL) {
        (void)PyList_SetSlice(kp->chunks, 0, PyList_GET_SIZE(kp->chunks),
                              NULL);
    }
}

int
cmp_pickler_dump(PyObject *op, PyObject *obj, PyObject **chunks)
{
    KeptPickler *kp = (KeptPickler *)op;
    if (kp == NULL || !kept_ready(kp)) {
        return 0;
    }
    kp->busy = 1;
    PyObject *dump = Py_NewRef(kp->dump); /* a reducer could drop it */
    PyObject *r = PyObject_CallOneArg(dump, obj);
    Py_DECREF(dump);
    if (r == NULL) {
        /* what a failed dump wrote is of no use; nor, to be safe, is the
           pickler itself */
        cmp_saved_exc saved;
        cmp_exc_save(&saved);
        kept_empty_sink(kp);
        kept_drop(kp);
        kp->busy = 0;
        cmp_exc_restore(&saved);
        return -1;
    }
    Py_DECREF(r);
    *chunks = kp->chunks;
    return 1;
}

void
cmp_pickler_release(PyObject *op)
{
    KeptPickler *kp = (KeptPickler *)op;
    cmp_saved_exc saved;
    cmp_exc_save(&saved);
    kept_empty_sink(kp);
    /* Forget what the pickler remembered (its memo keeps every object
       pickled alive, and would make the next pickle refer back to them);
       a pickler that cannot forget is not kept. */
    PyObject *r = kp->clear_memo ? PyObject_CallNoArgs(kp->clear_memo) : NULL;
    if (r == NULL) {
        PyErr_Clear();
        kept_drop(kp);
    }
    Py_XDECREF(r);
    kp->busy = 0;
    cmp_exc_restore(&saved);
}

/* The chunks as one bytes object. */
static PyObject *
join_chunks(PyObject *chunks)
{
    Py_ssize_t n = PyList_GET_SIZE(chunks);
    if (n == 1) {
        return Py_NewRef(PyList_GET_ITEM(chunks, 0));
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        total += PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, i));
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out != NULL) {
        char *p = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *c = PyList_GET_ITEM(chunks, i);
            memcpy(p, PyBytes_AS_STRING(c), (size_t)PyBytes_GET_SIZE(c));
            p += PyBytes_GET_SIZE(c);
        }
    }
    return out;
}

PyObject *
cmp_pickler_dumps(PyObject *kp, PyObject *dumps, PyObject *obj)
{
    PyObject *chunks;
    Py_XINCREF(kp); /* its owner may be rebound by a reducer */
    int r = cmp_pickler_dump(kp, obj, &chunks);
    PyObject *out = NULL;
    if (r == 0) {
        out = PyObject_CallOneArg(dumps, obj);
    }
    else if (r > 0) {
        out = join_chunks(chunks);
        cmp_pickler_release(kp);
    }
    Py_XDECREF(kp);
    return out;
}

int
cmp_pickler_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    st->KeptPickler_type = PyType_FromModuleAndSpec(module, &kept_spec, NULL);
    return st->KeptPickler_type == NULL ? -1 : 0;
}
