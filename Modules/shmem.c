/*
 * shmem.c -- named shared-memory segments.
 *
 *   shm_open(path, flags, mode=0o777) -> fd       as _posixshmem.shm_open
 *   shm_unlink(path)                             as _posixshmem.shm_unlink
 *   shm_segment(path, flags, mode, size) -> SharedMemoryHandle
 *       open (create when flags say so), size (ftruncate when size > 0,
 *       fstat otherwise) and map the segment in one call, with the GIL
 *       released once.  The handle exports the mapping through the buffer
 *       protocol and refuses to unmap while views of it exist, so a
 *       released segment can never be touched through a stale pointer.
 */
#include "cmp.h"

#include <errno.h>
#include <stddef.h>

typedef struct {
    PyObject_HEAD
    cmp_mapping map;
    PyObject *name;        /* the path it was opened with (str) */
    Py_ssize_t exports;    /* buffer views alive */
    PyObject *weakreflist;
} SegmentObject;

static PyObject *
raise_for_name(int code, PyObject *name)
{
#ifdef CMP_WINDOWS
    return PyErr_SetExcFromWindowsErrWithFilenameObject(PyExc_OSError, code,
                                                        name);
#else
    errno = code;
    return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
#endif
}

/* ---- shm_open / shm_unlink ---------------------------------------------- */

static PyObject *
shm_open_func(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const names[] = {"path", "flags", "mode"};
    static const cmp_argspec spec = CMP_ARGSPEC("shm_open", names, 2);
    PyObject *a[3], *path = NULL, *result = NULL;
    int flags, mode = 0777, err;
    cmp_handle_t fd;
    (void)module;

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (cmp_arg_int(a[1], "flags", &flags) < 0 ||
        (a[2] != NULL && cmp_arg_int(a[2], "mode", &mode) < 0)) {
        return NULL;
    }
    if (!PyUnicode_FSConverter(a[0], &path)) {
        return NULL;
    }
    const char *cpath = PyBytes_AS_STRING(path);
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        err = cmp_shm_open_fd(cpath, flags, mode, &fd);
        Py_END_ALLOW_THREADS
        if (err != CMP_INTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
    }
    if (err) {
        raise_for_name(err, a[0]);
        goto done;
    }
    result = cmp_handle_to_int(fd);
done:
    Py_DECREF(path);
    return result;
}

static PyObject *
shm_unlink_func(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"path"};
    static const cmp_argspec spec = CMP_ARGSPEC("shm_unlink", names, 1);
    PyObject *a[1], *path = NULL;
    int err;
    (void)module;

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (!PyUnicode_FSConverter(a[0], &path)) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    err = cmp_shm_unlink(PyBytes_AS_STRING(path));
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (err) {
        return raise_for_name(err, a[0]);
    }
    Py_RETURN_NONE;
}

/* ---- the segment type ------------------------------------------------ */

static PyObject *
shm_segment_func(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"path", "flags", "mode", "size"};
    static const cmp_argspec spec = CMP_ARGSPEC("shm_segment", names, 2);
    PyObject *a[4], *path = NULL;
    int flags, mode = 0600, err, created;
    Py_ssize_t size = 0;
    cmp_mapping map;
    cmp_state *st = cmp_get_state(module);

    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (cmp_arg_int(a[1], "flags", &flags) < 0 ||
        (a[2] != NULL && cmp_arg_int(a[2], "mode", &mode) < 0)) {
        return NULL;
    }
    if (cmp_arg_opt_ssize(a[3], 0, &size) < 0) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must not be negative");
        return NULL;
    }
    if (!PyUnicode_Check(a[0])) {
        PyErr_Format(PyExc_TypeError, "path must be str, not %.100s",
                     Py_TYPE(a[0])->tp_name);
        return NULL;
    }
    if (!PyUnicode_FSConverter(a[0], &path)) {
        return NULL;
    }
    SegmentObject *self = PyObject_New(
        SegmentObject, (PyTypeObject *)st->SharedMemoryHandle_type);
    if (self == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    self->map.addr = NULL;
    self->map.size = 0;
    self->map.handle = CMP_INVALID_HANDLE;
    self->exports = 0;
    self->weakreflist = NULL;
    self->name = Py_NewRef(a[0]);

    const char *cpath = PyBytes_AS_STRING(path);
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        err = cmp_shm_segment_open(cpath, flags, mode, (size_t)size, &map,
                                   &created);
        Py_END_ALLOW_THREADS
        if (err != CMP_INTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            goto error;
        }
    }
    if (err) {
        if (err == CMP_EMPTY) {
            PyErr_SetString(PyExc_ValueError, "cannot mmap an empty file");
        }
        else {
            raise_for_name(err, a[0]);
        }
        goto error;
    }
    self->map = map;
    Py_DECREF(path);
    return (PyObject *)self;

error:
    Py_DECREF(path);
    Py_DECREF(self);
    return NULL;
}

static void
segment_dealloc(SegmentObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    /* Views hold a reference, so none is left here. */
    (void)cmp_shm_segment_close(&self->map);
    Py_XDECREF(self->name);
    tp->tp_free(self);
    Py_DECREF(tp);
}

int
cmp_mapping_getbuffer(PyObject *owner, const cmp_mapping *m,
                      Py_ssize_t *exports, Py_buffer *view, int flags,
                      const char *unmapped)
{
    if (m->addr == NULL) {
        PyErr_SetString(PyExc_ValueError, unmapped);
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, owner, m->addr, (Py_ssize_t)m->size, 0,
                          flags) < 0) {
        return -1;
    }
    (*exports)++;
    return 0;
}

static int
segment_getbuffer(SegmentObject *self, Py_buffer *view, int flags)
{
    return cmp_mapping_getbuffer((PyObject *)self, &self->map, &self->exports,
                                 view, flags,
                                 "the shared memory segment is closed");
}

static void
segment_releasebuffer(SegmentObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyObject *
segment_close(SegmentObject *self, PyObject *unused)
{
    (void)unused;
    if (self->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot close the shared memory segment: %zd "
                     "exported view(s) still in use",
                     self->exports);
        return NULL;
    }
    if (self->map.addr == NULL && self->map.handle == CMP_INVALID_HANDLE) {
        Py_RETURN_NONE;
    }
    int err = cmp_shm_segment_close(&self->map);
    if (err) {
        return cmp_raise_oserror(err);
    }
    Py_RETURN_NONE;
}

static PyObject *
segment_get_size(SegmentObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(self->map.size);
}

static PyObject *
segment_get_fd(SegmentObject *self, void *closure)
{
    (void)closure;
    return cmp_handle_to_int(self->map.handle);
}

static PyObject *
segment_get_closed(SegmentObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->map.addr == NULL);
}

static PyObject *
segment_get_name(SegmentObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->name);
}

static PyObject *
segment_repr(SegmentObject *self)
{
    if (self->map.addr == NULL) {
        return PyUnicode_FromFormat("<SharedMemoryHandle %R closed>",
                                    self->name);
    }
    return PyUnicode_FromFormat("<SharedMemoryHandle %R size=%zu>", self->name,
                                self->map.size);
}

static PyMethodDef segment_methods[] = {
    {"close", (PyCFunction)segment_close, METH_NOARGS,
     "Unmap the segment and close its descriptor (the name stays). "
     "Raises BufferError while views of the buffer are alive."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef segment_getset[] = {
    {"size", (getter)segment_get_size, NULL, "Mapped size in bytes.", NULL},
    {"fd", (getter)segment_get_fd, NULL,
     "The segment's descriptor (-1 once closed).", NULL},
    {"closed", (getter)segment_get_closed, NULL, "True once closed.", NULL},
    {"name", (getter)segment_get_name, NULL, "The path it was opened with.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef segment_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(SegmentObject, weakreflist),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot segment_slots[] = {
    {Py_tp_dealloc, segment_dealloc},
    {Py_tp_repr, segment_repr},
    {Py_tp_methods, segment_methods},
    {Py_tp_getset, segment_getset},
    {Py_tp_members, segment_members},
    {Py_bf_getbuffer, segment_getbuffer},
    {Py_bf_releasebuffer, segment_releasebuffer},
    {Py_tp_doc, "A mapped shared-memory segment; made by shm_segment()."},
    {0, NULL},
};

static PyType_Spec segment_spec = {
    .name = "_cmultiprocessing.SharedMemoryHandle",
    .basicsize = sizeof(SegmentObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = segment_slots,
};

static PyMethodDef shmem_functions[] = {
    {"shm_open", (PyCFunction)(void (*)(void))shm_open_func,
     METH_FASTCALL | METH_KEYWORDS,
     "shm_open(path, flags, mode=0o777) -> fd\n\n"
     "Open (or create) a POSIX shared memory object."},
    {"shm_unlink", (PyCFunction)(void (*)(void))shm_unlink_func,
     METH_FASTCALL | METH_KEYWORDS,
     "shm_unlink(path)\n\nRemove a shared memory object's name."},
    {"shm_segment", (PyCFunction)(void (*)(void))shm_segment_func,
     METH_FASTCALL | METH_KEYWORDS,
     "shm_segment(path, flags, mode=0o600, size=0) -> SharedMemoryHandle\n\n"
     "Open the named segment, resize it to `size` when size > 0 (otherwise "
     "read its size) and map it, in one call."},
    {NULL, NULL, 0, NULL},
};

int
cmp_shmem_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    st->SharedMemoryHandle_type = PyType_FromModuleAndSpec(
        module, &segment_spec, NULL);
    if (st->SharedMemoryHandle_type == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "SharedMemoryHandle",
                              st->SharedMemoryHandle_type) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, shmem_functions);
}
