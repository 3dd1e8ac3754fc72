/*
 * heap_views.c -- the parts of the arena heap (heap.c) that only the
 * stdlib's tests and debugging read: the views of the heap's state
 * (_arenas, _len_to_seq, _lengths, _allocated_blocks, _pending_free_blocks,
 * _n_mallocs, _n_frees, _size, _lastpid, _alignment), its two tunables and
 * Heap._lock (HeapLock), built from heap.c's state on every access.  Kept
 * apart so that heap.c holds the allocator alone.
 */
#include "cmp.h"
#include "heap.h"

#include <stddef.h>

/* ==== Heap's attributes ================================================ */

static PyObject *
seg_tuple(seg *s)
{
    return Py_BuildValue("(Onn)", (PyObject *)s->arena->obj,
                         (Py_ssize_t)s->start, (Py_ssize_t)s->stop);
}

/* Item i of _arenas and of _pending_free_blocks (cmp_list_of). */
static PyObject *
arena_item(const void *h, Py_ssize_t i)
{
    return Py_NewRef((PyObject *)((const HeapObject *)h)->arenas[i]->obj);
}

static PyObject *
pending_item(const void *h, Py_ssize_t i)
{
    return seg_tuple(((const HeapObject *)h)->pending[i]);
}

static PyObject *
view_len_to_seq(HeapObject *h)
{
    PyObject *d = PyDict_New(), *list = NULL, *key = NULL;
    if (d == NULL) {
        return NULL;
    }
    size_t cur = 0;
    for (Py_ssize_t i = 0; i < h->n_free; i++) {
        seg *s = h->freev[i];
        size_t len = s->stop - s->start;
        if (list == NULL || len != cur) {
            cur = len;
            Py_XDECREF(list);
            list = PyList_New(0);
            key = PyLong_FromSize_t(len);
            if (list == NULL || key == NULL ||
                PyDict_SetItem(d, key, list) < 0) {
                Py_XDECREF(key);
                goto error;
            }
            Py_DECREF(key);
        }
        PyObject *t = seg_tuple(s);
        if (t == NULL || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            goto error;
        }
        Py_DECREF(t);
    }
    Py_XDECREF(list);
    return d;
error:
    Py_XDECREF(list);
    Py_DECREF(d);
    return NULL;
}

static PyObject *
view_lengths(HeapObject *h)
{
    PyObject *list = PyList_New(0);
    size_t last = 0;
    for (Py_ssize_t i = 0; list != NULL && i < h->n_free; i++) {
        size_t len = h->freev[i]->stop - h->freev[i]->start;
        if (i > 0 && len == last) {
            continue;
        }
        last = len;
        PyObject *v = PyLong_FromSize_t(len);
        if (v == NULL || PyList_Append(list, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(v);
    }
    return list;
}

static PyObject *
view_allocated_blocks(HeapObject *h)
{
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        arec *a = h->arenas[i];
        if (a->n_used == 0) {
            continue;
        }
        PyObject *set = PySet_New(NULL);
        if (set == NULL || PyDict_SetItem(d, (PyObject *)a->obj, set) < 0) {
            Py_XDECREF(set);
            goto error;
        }
        Py_DECREF(set);
        for (seg *s = a->first; s != NULL; s = s->next) {
            if (s->state == SEG_FREE) {
                continue;
            }
            PyObject *t = Py_BuildValue("(nn)", (Py_ssize_t)s->start,
                                        (Py_ssize_t)s->stop);
            if (t == NULL || PySet_Add(set, t) < 0) {
                Py_XDECREF(t);
                goto error;
            }
            Py_DECREF(t);
        }
    }
    return d;
error:
    Py_DECREF(d);
    return NULL;
}

/* Every view is this one getter: it checks that the heap is still this
   process's, then builds the view the closure names. */
enum {
    VIEW_ARENAS,
    VIEW_LEN_TO_SEQ,
    VIEW_LENGTHS,
    VIEW_ALLOCATED,
    VIEW_PENDING,
    VIEW_MALLOCS,
    VIEW_FREES,
    VIEW_SIZE,
    VIEW_PID,
    VIEW_ALIGNMENT,
};

static PyObject *
heap_get_view(HeapObject *h, void *closure)
{
    if (cmp_heap_check_fork(h) < 0) {
        return NULL;
    }
    switch ((int)(intptr_t)closure) {
    case VIEW_ARENAS:
        return cmp_list_of(h->n_arenas, arena_item, h);
    case VIEW_LEN_TO_SEQ:
        return view_len_to_seq(h);
    case VIEW_LENGTHS:
        return view_lengths(h);
    case VIEW_ALLOCATED:
        return view_allocated_blocks(h);
    case VIEW_PENDING:
        return cmp_list_of(h->n_pending, pending_item, h);
    case VIEW_MALLOCS:
        return PyLong_FromSsize_t(h->n_mallocs);
    case VIEW_FREES:
        return PyLong_FromSsize_t(h->n_frees);
    case VIEW_SIZE:
        return PyLong_FromSize_t(h->size);
    case VIEW_PID:
        return PyLong_FromLong(h->pid);
    default:
        return PyLong_FromLong(HEAP_ALIGNMENT);
    }
}

/* The two tunables; the closure is the field's offset in HeapObject. */
static PyObject *
heap_get_tunable(HeapObject *h, void *closure)
{
    return PyLong_FromSize_t(*(size_t *)((char *)h + (intptr_t)closure));
}

static int
heap_set_tunable(HeapObject *h, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a heap limit");
        return -1;
    }
    Py_ssize_t n;
    if (cmp_arg_ssize(value, &n) < 0) {
        return -1;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "a heap limit cannot be negative");
        return -1;
    }
    *(size_t *)((char *)h + (intptr_t)closure) = (size_t)n;
    return 0;
}

static PyObject *
heap_get_lock(HeapObject *h, void *closure)
{
    (void)closure;
    cmp_state *st = cmp_state_from_type(Py_TYPE(h));
    if (st == NULL) {
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)st->HeapLock_type;
    LockObject *l = PyObject_GC_New(LockObject, tp);
    if (l == NULL) {
        return NULL;
    }
    l->heap = (HeapObject *)Py_NewRef((PyObject *)h);
    PyObject_GC_Track(l);
    return (PyObject *)l;
}

PyGetSetDef cmp_heap_getset[] = {
    {"_arenas", (getter)heap_get_view, NULL, "Arenas, oldest first.",
     (void *)VIEW_ARENAS},
    {"_len_to_seq", (getter)heap_get_view, NULL,
     "{length: [(arena, start, stop), ...]} of the free blocks.",
     (void *)VIEW_LEN_TO_SEQ},
    {"_lengths", (getter)heap_get_view, NULL,
     "Sorted lengths of the free blocks.", (void *)VIEW_LENGTHS},
    {"_allocated_blocks", (getter)heap_get_view, NULL,
     "{arena: {(start, stop), ...}} of the blocks in use.",
     (void *)VIEW_ALLOCATED},
    {"_pending_free_blocks", (getter)heap_get_view, NULL,
     "Blocks freed while the heap was busy, not yet given back.",
     (void *)VIEW_PENDING},
    {"_n_mallocs", (getter)heap_get_view, NULL, "Blocks handed out.",
     (void *)VIEW_MALLOCS},
    {"_n_frees", (getter)heap_get_view, NULL, "Blocks given back.",
     (void *)VIEW_FREES},
    {"_size", (getter)heap_get_view, NULL, "Size of the next arena.",
     (void *)VIEW_SIZE},
    {"_lastpid", (getter)heap_get_view, NULL,
     "The process the heap's state belongs to.", (void *)VIEW_PID},
    {"_alignment", (getter)heap_get_view, NULL, "Block alignment.",
     (void *)VIEW_ALIGNMENT},
    {"_lock", (getter)heap_get_lock, NULL, "The heap's lock.", NULL},
    {"_DISCARD_FREE_SPACE_LARGER_THAN", (getter)heap_get_tunable,
     (setter)heap_set_tunable,
     "Entirely free arenas at least this long are released.",
     (void *)offsetof(HeapObject, discard_limit)},
    {"_DOUBLE_ARENA_SIZE_UNTIL", (getter)heap_get_tunable,
     (setter)heap_set_tunable, "Arena sizes double until this size.",
     (void *)offsetof(HeapObject, double_until)},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ==== HeapLock ======================================================== */

static int
lock_parse(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           int *blocking, double *timeout)
{
    static const char *const names[] = {"blocking", "timeout"};
    static const cmp_argspec spec = CMP_ARGSPEC("acquire", names, 0);
    PyObject *a[2];
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_bool(a[0], 1, blocking) < 0) {
        return -1;
    }
    *timeout = -1.0;
    if (a[1] != NULL) {
        *timeout = PyFloat_AsDouble(a[1]);
        if (*timeout == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (!*blocking && *timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError,
                        "can't specify a timeout for a non-blocking call");
        return -1;
    }
    if (*timeout < 0 && *timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError,
                        "timeout value must be a non-negative number");
        return -1;
    }
    return 0;
}

static PyObject *
lock_acquire(LockObject *self, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    int blocking;
    double timeout;
    if (lock_parse(args, nargs, kwnames, &blocking, &timeout) < 0) {
        return NULL;
    }
    HeapObject *h = self->heap;
    if (cmp_heap_check_fork(h) < 0) {
        return NULL;
    }
    if (!blocking) {
        return PyBool_FromLong(PyThread_acquire_lock(h->lock, NOWAIT_LOCK));
    }
    cmp_deadline d = cmp_deadline_in(timeout >= 0, timeout);
    int got = cmp_heap_lock_until(h, &d);
    if (got < 0) {
        return NULL;
    }
    return PyBool_FromLong(got);
}

/* Whether the heap's lock is held, leaving it as it is: 1 held, 0 free,
   -1 error (the heap belongs to another process). */
static int
lock_is_held(LockObject *self)
{
    HeapObject *h = self->heap;
    if (cmp_heap_check_fork(h) < 0) {
        return -1;
    }
    if (PyThread_acquire_lock(h->lock, NOWAIT_LOCK)) {
        PyThread_release_lock(h->lock);
        return 0;
    }
    return 1;
}

static PyObject *
lock_release(LockObject *self, PyObject *unused)
{
    (void)unused;
    int held = lock_is_held(self);
    if (held < 0) {
        return NULL;
    }
    if (!held) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    PyThread_release_lock(self->heap->lock);
    Py_RETURN_NONE;
}

static PyObject *
lock_locked(LockObject *self, PyObject *unused)
{
    (void)unused;
    int held = lock_is_held(self);
    if (held < 0) {
        return NULL;
    }
    return PyBool_FromLong(held);
}

static PyObject *
lock_enter(LockObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *r = lock_acquire(self, NULL, 0, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

static PyObject *
lock_exit(LockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return lock_release(self, NULL);
}

static int
lock_traverse(LockObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->heap);
    return 0;
}

static void
lock_dealloc(LockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_XDECREF(self->heap);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)lock_release, METH_NOARGS, "release()"},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS, "locked() -> bool"},
    {"__enter__", (PyCFunction)lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot lock_slots[] = {
    {Py_tp_dealloc, lock_dealloc},
    {Py_tp_traverse, lock_traverse},
    {Py_tp_methods, lock_methods},
    {Py_tp_doc, "The lock of a Heap (not reentrant)."},
    {0, NULL},
};

PyType_Spec cmp_heap_lock_spec = {
    .name = "_cmultiprocessing.HeapLock",
    .basicsize = sizeof(LockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = lock_slots,
};
