/*
 * pool.c -- the hot loop of a Pool.map() chunk and its packed results.
 *
 *   map_chunk(func, items, star=False) -> bytes or list
 *       Call func(item) (func(*item) when star) for every item, in order.
 *       When every result is an exact int that fits in 64 bits, or every
 *       result is an exact float, the results come back packed: one tag
 *       byte ('q' or 'd') and 8 bytes a value in native order.  Otherwise
 *       (or for no items) the list of the results.
 *   unpack_into(data, target, start)
 *       Store the values packed in `data` into the list `target`, at
 *       target[start], target[start + 1], ...
 *   take_tasks(queue, batch, limit) -> int
 *       Move the tasks (tuples) at the left of the deque `queue` to the
 *       end of the list `batch`, until batch holds `limit` items, the
 *       queue is empty or its next item is no tuple (a submission of
 *       another kind, left where it is); returns how many moved.  The
 *       dispatcher's loop over apply_async()'s tasks, which cost it about
 *       0.3 us a task in Python on the test VM.
 *
 * A packed chunk costs a memcpy to pickle and to unpickle, where a list of
 * n ints costs n pickle opcodes each way; pool workers always run on the
 * same machine as the pool, so the native byte order is shared.
 */
#include "cmp.h"

#include <stdint.h>
#include <string.h>

#define PACK_INT 'q'
#define PACK_FLOAT 'd'
#define PACK_CELL 8

/* The packed values seen so far: tag 0 until the first result. */
typedef struct {
    char tag;
    Py_ssize_t count;
    Py_ssize_t room;
    unsigned char *cells;
} packer;

static int
packer_grow(packer *p)
{
    Py_ssize_t room = p->room < 64 ? 64 : p->room * 2;
    if (room > PY_SSIZE_T_MAX / PACK_CELL - 1) {
        PyErr_NoMemory();
        return -1;
    }
    unsigned char *cells = PyMem_Realloc(p->cells, (size_t)room * PACK_CELL);
    if (cells == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->cells = cells;
    p->room = room;
    return 0;
}

/* Add `value` to the packed run: 1 when added, 0 when it does not fit the
   run (the caller falls back to a list), -1 on error. */
static int
packer_add(packer *p, PyObject *value)
{
    unsigned char *cell;
    if (PyLong_CheckExact(value) && p->tag != PACK_FLOAT) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            return 0;
        }
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (p->count == p->room && packer_grow(p) < 0) {
            return -1;
        }
        int64_t v64 = (int64_t)v;
        cell = p->cells + p->count * PACK_CELL;
        memcpy(cell, &v64, PACK_CELL);
        p->tag = PACK_INT;
    }
    else if (PyFloat_CheckExact(value) && p->tag != PACK_INT) {
        double d = PyFloat_AS_DOUBLE(value);
        if (p->count == p->room && packer_grow(p) < 0) {
            return -1;
        }
        cell = p->cells + p->count * PACK_CELL;
        memcpy(cell, &d, PACK_CELL);
        p->tag = PACK_FLOAT;
    }
    else {
        return 0;
    }
    p->count++;
    return 1;
}

/* The value in cell i of a run tagged `tag` (new reference). */
static PyObject *
cell_value(char tag, const unsigned char *cells, Py_ssize_t i)
{
    const unsigned char *cell = cells + i * PACK_CELL;
    if (tag == PACK_INT) {
        int64_t v;
        memcpy(&v, cell, PACK_CELL);
        return PyLong_FromLongLong((long long)v);
    }
    double d;
    memcpy(&d, cell, PACK_CELL);
    return PyFloat_FromDouble(d);
}

static PyObject *
packer_item(const void *ctx, Py_ssize_t i)
{
    const packer *p = ctx;
    return cell_value(p->tag, p->cells, i);
}

/* The packed run so far, as a list with room to grow. */
static PyObject *
packer_to_list(const packer *p)
{
    return cmp_list_of(p->count, packer_item, p);
}

static PyObject *
packer_to_bytes(const packer *p)
{
    PyObject *data = PyBytes_FromStringAndSize(NULL, 1 + p->count * PACK_CELL);
    if (data == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(data);
    out[0] = p->tag;
    if (p->count > 0) {
        memcpy(out + 1, p->cells, (size_t)p->count * PACK_CELL);
    }
    return data;
}

/* func(*item): a tuple item is passed as it is. */
static PyObject *
call_star(PyObject *func, PyObject *item)
{
    if (PyTuple_CheckExact(item)) {
        return PyObject_Call(func, item, NULL);
    }
    PyObject *args = PySequence_Tuple(item);
    if (args == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_Call(func, args, NULL);
    Py_DECREF(args);
    return result;
}

static PyObject *
map_chunk_func(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    static const char *const names[] = {"func", "items", "star"};
    static const cmp_argspec spec = CMP_ARGSPEC("map_chunk", names, 2);
    PyObject *a[3], *it = NULL, *list = NULL, *item, *result = NULL;
    packer p = {0, 0, 0, NULL};
    int star;
    (void)module;

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_bool(a[2], 0, &star) < 0) {
        return NULL;
    }
    PyObject *func = a[0];
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError,
                     "map_chunk: %.200s object is not "
                     "callable",
                     Py_TYPE(func)->tp_name);
        return NULL;
    }
    it = PyObject_GetIter(a[1]);
    if (it == NULL) {
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *value = star ? call_star(func, item)
                               : PyObject_CallOneArg(func, item);
        Py_DECREF(item);
        if (value == NULL) {
            goto error;
        }
        if (list == NULL) {
            int added = packer_add(&p, value);
            if (added != 0) {
                Py_DECREF(value);
                if (added < 0) {
                    goto error;
                }
                continue;
            }
            /* this result does not pack: a list from here on */
            list = packer_to_list(&p);
            if (list == NULL) {
                Py_DECREF(value);
                goto error;
            }
        }
        int rc = PyList_Append(list, value);
        Py_DECREF(value);
        if (rc < 0) {
            goto error;
        }
    }
    if (PyErr_Occurred()) {
        goto error;
    }
    if (list != NULL) {
        result = list;
        list = NULL;
    }
    else if (p.count == 0) {
        result = PyList_New(0);
    }
    else {
        result = packer_to_bytes(&p);
    }
error:
    Py_XDECREF(list);
    Py_DECREF(it);
    PyMem_Free(p.cells);
    return result;
}

static PyObject *
unpack_into_func(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"data", "target", "start"};
    static const cmp_argspec spec = CMP_ARGSPEC("unpack_into", names, 3);
    PyObject *a[3], *result = NULL;
    Py_ssize_t start;
    Py_buffer view;
    (void)module;

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    PyObject *target = a[1];
    if (!PyList_Check(target)) {
        PyErr_Format(PyExc_TypeError,
                     "unpack_into: target must be a list, "
                     "not %.200s",
                     Py_TYPE(target)->tp_name);
        return NULL;
    }
    if (cmp_arg_ssize(a[2], &start) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = view.buf;
    if (view.len < 1 || (data[0] != PACK_INT && data[0] != PACK_FLOAT) ||
        (view.len - 1) % PACK_CELL != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "unpack_into: data is not a packed chunk");
        goto done;
    }
    Py_ssize_t count = (view.len - 1) / PACK_CELL;
    if (start < 0 || start > PyList_GET_SIZE(target) ||
        count > PyList_GET_SIZE(target) - start) {
        PyErr_Format(PyExc_ValueError,
                     "unpack_into: %zd values at %zd do not fit a list of "
                     "%zd",
                     count, start, PyList_GET_SIZE(target));
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *v = cell_value((char)data[0], data + 1, i);
        if (v == NULL) {
            goto done;
        }
        /* dropping the old item may run Python code (a __del__) that
           shrinks the list: check again before every store */
        if (start + i >= PyList_GET_SIZE(target)) {
            Py_DECREF(v);
            PyErr_SetString(PyExc_ValueError,
                            "unpack_into: the target list shrank");
            goto done;
        }
        if (PyList_SetItem(target, start + i, v) < 0) {
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
take_tasks_func(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"queue", "batch", "limit"};
    static const cmp_argspec spec = CMP_ARGSPEC("take_tasks", names, 3);
    PyObject *a[3];
    Py_ssize_t limit, moved = 0;
    cmp_state *st = cmp_get_state(module);

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_ssize(a[2], &limit) < 0) {
        return NULL;
    }
    PyObject *queue = a[0], *batch = a[1];
    if (!PyList_Check(batch)) {
        PyErr_Format(PyExc_TypeError,
                     "take_tasks: batch must be a list, not %.200s",
                     Py_TYPE(batch)->tp_name);
        return NULL;
    }
    while (PyList_GET_SIZE(batch) < limit) {
        Py_ssize_t left = PyObject_Length(queue);
        if (left < 0) {
            return NULL;
        }
        if (left == 0) {
            break;
        }
        PyObject *item = PyObject_CallMethodNoArgs(queue, st->str_popleft);
        if (item == NULL) {
            return NULL;
        }
        if (!PyTuple_CheckExact(item)) {
            /* not a task: back where it was (only the caller takes from
               the left) */
            PyObject *out = PyObject_CallMethodOneArg(
                queue, st->str_appendleft, item);
            Py_DECREF(item);
            if (out == NULL) {
                return NULL;
            }
            Py_DECREF(out);
            break;
        }
        int rc = PyList_Append(batch, item);
        Py_DECREF(item);
        if (rc < 0) {
            return NULL;
        }
        moved++;
    }
    return PyLong_FromSsize_t(moved);
}

static PyMethodDef pool_functions[] = {
    {"map_chunk", (PyCFunction)(void (*)(void))map_chunk_func,
     METH_FASTCALL | METH_KEYWORDS,
     "map_chunk(func, items, star=False) -> bytes or list\n\n"
     "The results of func over items (func(*item) when star), packed as "
     "bytes when all are 64-bit ints or all floats, else as a list."},
    {"unpack_into", (PyCFunction)(void (*)(void))unpack_into_func,
     METH_FASTCALL | METH_KEYWORDS,
     "unpack_into(data, target, start)\n\n"
     "Store the values packed by map_chunk() into the list target from "
     "index start on."},
    {"take_tasks", (PyCFunction)(void (*)(void))take_tasks_func,
     METH_FASTCALL | METH_KEYWORDS,
     "take_tasks(queue, batch, limit) -> int\n\n"
     "Move the tuples at the left of the deque queue to the list batch, "
     "until it holds limit items or the next item is no tuple."},
    {NULL, NULL, 0, NULL},
};

int
cmp_pool_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    st->str_popleft = PyUnicode_InternFromString("popleft");
    st->str_appendleft = PyUnicode_InternFromString("appendleft");
    if (st->str_popleft == NULL || st->str_appendleft == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, pool_functions);
}
