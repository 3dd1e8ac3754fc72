/*
 * heap.c -- the arena heap behind sharedctypes.
 *
 * Arena       a run of shared memory (memfd / unlinked temp file on POSIX)
 *             that a forked child inherits and that a spawned child maps
 *             again from a passed descriptor: Arena(size, fd=-1).
 * Heap        hands out 8-byte aligned blocks of arenas, best fit, and
 *             merges a freed block with its free neighbours at once.
 *             Arenas grow in size (doubling up to _DOUBLE_ARENA_SIZE_UNTIL)
 *             and an arena that becomes entirely free is released when it
 *             is at least _DISCARD_FREE_SPACE_LARGER_THAN bytes long.
 * HeapBlock   one allocated block; exports its bytes through the buffer
 *             protocol and gives them back to its heap when it dies.
 * HeapLock    the heap's own lock, as a Python object (Heap._lock):
 *             heap_views.c, with the views below.
 *
 * Book-keeping: every arena keeps its segments (free or in use) in a list
 * ordered by address, so the neighbours of a block are found in O(1); the
 * free segments are also kept in one array sorted by (length, address) for
 * best-fit search by bisection.  The Python views the stdlib's tests
 * inspect (_arenas, _len_to_seq, _allocated_blocks, _pending_free_blocks,
 * _n_mallocs, _n_frees, ...) are built from this state on every access, by
 * heap_views.c; heap.h is what the two files share.
 *
 * Frees may come from the garbage collector at any moment, also while this
 * thread is inside the heap: a free that cannot take the lock at once is
 * queued and applied by the next operation that holds the lock.
 *
 * After fork() a child starts afresh (new lock, no arenas): memory that the
 * parent hands out must never be handed out again by the child.  Blocks
 * inherited from the parent stay mapped while referenced and are simply
 * not returned.
 */
#include "cmp.h"
#include "heap.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#ifdef CMP_WINDOWS
#  include <process.h>
#  define heap_getpid() ((long)_getpid())
#else
#  include <unistd.h>
#  define heap_getpid() ((long)getpid())
#endif

#define HEAP_DEFAULT_DISCARD ((size_t)4 << 20)
#define HEAP_DEFAULT_DOUBLE_UNTIL ((size_t)4 << 20)

static cmp_state *
heap_state(PyObject *obj)
{
    return cmp_state_from_type(Py_TYPE(obj));
}

/* ==== Arena ========================================================== */

static ArenaObject *
arena_alloc(PyTypeObject *tp)
{
    ArenaObject *a = (ArenaObject *)tp->tp_alloc(tp, 0);
    if (a != NULL) {
        a->map.addr = NULL;
        a->map.size = 0;
        a->map.handle = CMP_INVALID_HANDLE;
        a->exports = 0;
        a->clean_from = 0;
        a->weakreflist = NULL;
    }
    return a;
}

static ArenaObject *
arena_create(cmp_state *st, size_t size)
{
    ArenaObject *a = arena_alloc((PyTypeObject *)st->Arena_type);
    if (a == NULL) {
        return NULL;
    }
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = cmp_arena_create(size, &a->map);
    Py_END_ALLOW_THREADS
    if (err) {
        Py_DECREF(a);
        cmp_raise_oserror(err);
        return NULL;
    }
    return a;
}

/* Arena(size, fd=-1): a new arena, or (fd >= 0) the mapping of an arena
   received from the parent; the arena then owns fd. */
static PyObject *
arena_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"size", "fd"};
    static const cmp_argspec spec = CMP_ARGSPEC("Arena", names, 1);
    PyObject *av[2];
    Py_ssize_t size, fd;
    if (cmp_parse_tuple(&spec, args, kwds, av) < 0 ||
        cmp_arg_ssize(av[0], &size) < 0 ||
        cmp_arg_opt_ssize(av[1], -1, &fd) < 0) {
        return NULL;
    }
    cmp_handle_t h = CMP_INVALID_HANDLE;
    if (fd >= 0 && cmp_io_handle_from_value((long long)fd, &h) != 0) {
        PyErr_Format(PyExc_ValueError, "invalid file descriptor: %zd", fd);
        return NULL;
    }
    if (size <= 0) {
        PyErr_Format(PyExc_ValueError, "arena size must be positive, not %zd",
                     size);
        return NULL;
    }
    ArenaObject *a = arena_alloc(tp);
    if (a == NULL) {
        return NULL;
    }
    int err;
    if (fd < 0) {
        Py_BEGIN_ALLOW_THREADS
        err = cmp_arena_create((size_t)size, &a->map);
        Py_END_ALLOW_THREADS
    }
    else {
        Py_BEGIN_ALLOW_THREADS
        err = cmp_arena_attach(h, (size_t)size, &a->map);
        Py_END_ALLOW_THREADS
        a->clean_from = (size_t)size; /* written by the parent */
    }
    if (err) {
        Py_DECREF(a);
        return cmp_raise_oserror(err);
    }
    return (PyObject *)a;
}

static void
arena_dealloc(ArenaObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    (void)cmp_arena_release(&self->map);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int
arena_getbuffer(ArenaObject *self, Py_buffer *view, int flags)
{
    if (cmp_mapping_getbuffer((PyObject *)self, &self->map, &self->exports,
                              view, flags, "arena is not mapped") < 0) {
        return -1;
    }
    self->clean_from = self->map.size; /* anything may be written now */
    return 0;
}

static void
arena_releasebuffer(ArenaObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyObject *
arena_get_size(ArenaObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(self->map.size);
}

static PyObject *
arena_get_fd(ArenaObject *self, void *closure)
{
    (void)closure;
    return cmp_handle_to_int(self->map.handle);
}

static PyObject *
arena_get_buffer(ArenaObject *self, void *closure)
{
    (void)closure;
    return PyMemoryView_FromObject((PyObject *)self);
}

static PyObject *block_make(cmp_state *st, HeapObject *heap,
                            ArenaObject *arena, seg *s, size_t start,
                            Py_ssize_t size);

/* arena.view(start, size): a HeapBlock over bytes of this arena that
   belongs to no heap (used to rebuild blocks in a spawned child). */
static PyObject *
arena_view(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    static const char *const names[] = {"start", "size"};
    static const cmp_argspec spec = CMP_ARGSPEC("view", names, 2);
    PyObject *a[2];
    Py_ssize_t start, size;
    if (cmp_parse_args(&spec, args, nargs, kwnames, a) < 0 ||
        cmp_arg_ssize(a[0], &start) < 0 || cmp_arg_ssize(a[1], &size) < 0) {
        return NULL;
    }
    if (start < 0 || size < 0 || (size_t)start > self->map.size ||
        (size_t)size > self->map.size - (size_t)start) {
        PyErr_Format(PyExc_ValueError,
                     "block [%zd, %zd+%zd) is outside the arena of %zu bytes",
                     start, start, size, self->map.size);
        return NULL;
    }
    cmp_state *st = heap_state((PyObject *)self);
    if (st == NULL) {
        return NULL;
    }
    return block_make(st, NULL, self, NULL, (size_t)start, size);
}

static PyObject *
arena_repr(ArenaObject *self)
{
    return PyUnicode_FromFormat("<Arena size=%zu fd=%ld>", self->map.size,
                                (long)(intptr_t)self->map.handle);
}

static PyMethodDef arena_methods[] = {
    {"view", (PyCFunction)(void (*)(void))arena_view,
     METH_FASTCALL | METH_KEYWORDS,
     "view(start, size) -> HeapBlock over these bytes, owned by no heap."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef arena_getset[] = {
    {"size", (getter)arena_get_size, NULL, "Length in bytes.", NULL},
    {"fd", (getter)arena_get_fd, NULL, "Descriptor of the backing memory.",
     NULL},
    {"buffer", (getter)arena_get_buffer, NULL,
     "A memoryview of the whole arena.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef arena_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(ArenaObject, weakreflist),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot arena_slots[] = {
    {Py_tp_new, arena_new},
    {Py_tp_dealloc, arena_dealloc},
    {Py_tp_repr, arena_repr},
    {Py_tp_methods, arena_methods},
    {Py_tp_getset, arena_getset},
    {Py_tp_members, arena_members},
    {Py_bf_getbuffer, arena_getbuffer},
    {Py_bf_releasebuffer, arena_releasebuffer},
    {Py_tp_doc, "Arena(size, fd=-1)\n\nShared memory that children "
                "inherit (fork) or map again from a passed fd (spawn)."},
    {0, NULL},
};

static PyType_Spec arena_spec = {
    .name = "_cmultiprocessing.Arena",
    .basicsize = sizeof(ArenaObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = arena_slots,
};

/* ==== free-segment index ============================================== */

/* Order of the free array: by length, then by address of the record. */
static int
seg_before(const seg *a, size_t len, const seg *b)
{
    size_t blen = b->stop - b->start;
    if (len != blen) {
        return len < blen;
    }
    return (uintptr_t)a < (uintptr_t)b;
}

/* First index whose segment does not come before s. */
static Py_ssize_t
freev_bisect(HeapObject *h, const seg *s)
{
    Py_ssize_t lo = 0, hi = h->n_free;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        seg *m = h->freev[mid];
        if (seg_before(m, m->stop - m->start, s)) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

/* Make room for `extra` more free segments; 0 or -1 (nothing changed). */
static int
freev_reserve(HeapObject *h, Py_ssize_t extra)
{
    if (h->n_free + extra <= h->cap_free) {
        return 0;
    }
    Py_ssize_t cap = h->cap_free ? h->cap_free : 16;
    while (cap < h->n_free + extra) {
        cap *= 2;
    }
    seg **v = PyMem_Realloc(h->freev, (size_t)cap * sizeof(seg *));
    if (v == NULL) {
        return -1;
    }
    h->freev = v;
    h->cap_free = cap;
    return 0;
}

/* Insert a free segment; capacity must have been reserved. */
static void
freev_insert(HeapObject *h, seg *s)
{
    Py_ssize_t lo = freev_bisect(h, s);
    memmove(h->freev + lo + 1, h->freev + lo,
            (size_t)(h->n_free - lo) * sizeof(seg *));
    h->freev[lo] = s;
    h->n_free++;
}

static void
freev_remove(HeapObject *h, seg *s)
{
    Py_ssize_t i = freev_bisect(h, s);
    assert(i < h->n_free && h->freev[i] == s);
    memmove(h->freev + i, h->freev + i + 1,
            (size_t)(h->n_free - i - 1) * sizeof(seg *));
    h->n_free--;
}

/* Smallest free segment of at least `len` bytes, or NULL. */
static seg *
freev_best_fit(HeapObject *h, size_t len)
{
    Py_ssize_t lo = 0, hi = h->n_free;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (h->freev[mid]->stop - h->freev[mid]->start < len) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo < h->n_free ? h->freev[lo] : NULL;
}

/* ==== heap state ==================================================== */

static void
heap_forget_everything(HeapObject *h)
{
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        arec *a = h->arenas[i];
        seg *s = a->first;
        while (s != NULL) {
            seg *next = s->next;
            PyMem_Free(s);
            s = next;
        }
        Py_DECREF(a->obj);
        PyMem_Free(a);
    }
    h->n_arenas = 0;
    h->n_free = 0;
    h->n_pending = 0;
    h->n_mallocs = 0;
    h->n_frees = 0;
    h->size = h->initial_size;
    h->generation++;
}

/* In a forked child: start afresh.  The parent's lock may have been held
   by a thread that does not exist here, so it is replaced (and leaked). */
int
cmp_heap_after_fork(HeapObject *h)
{
    PyThread_type_lock lock = PyThread_allocate_lock();
    if (lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    h->lock = lock;
    heap_forget_everything(h);
    h->epoch = cmp_fork_epoch();
    h->pid = heap_getpid();
    return 0;
}

/* One slice of a wait for the heap's lock (wait.h's cmp_wait_step). */
static int
heap_lock_step(void *ctx, double slice, int *err)
{
    (void)err;
    PyThread_type_lock lock = (PyThread_type_lock)ctx;
    return PyThread_acquire_lock_timed(lock, (PY_TIMEOUT_T)(slice * 1e6), 0) ==
           PY_LOCK_ACQUIRED;
}

int
cmp_heap_lock_until(HeapObject *h, const cmp_deadline *d)
{
    if (PyThread_acquire_lock(h->lock, NOWAIT_LOCK)) {
        return 1;
    }
    return cmp_wait_sliced(d, heap_lock_step, (void *)h->lock);
}

static int
heap_lock_wait(HeapObject *h)
{
    cmp_deadline forever = cmp_deadline_in(0, 0.0);
    return cmp_heap_lock_until(h, &forever) < 0 ? -1 : 0;
}

/* Give a segment back (lock held, capacity for one more free segment
   reserved). */
static void
heap_apply_free(HeapObject *h, seg *s)
{
    arec *a = s->arena;
    s->state = SEG_FREE;
    a->n_used--;
    h->n_frees++;
    seg *p = s->prev, *n = s->next;
    if (p != NULL && p->state == SEG_FREE) {
        freev_remove(h, p);
        s->start = p->start;
        s->prev = p->prev;
        if (p->prev != NULL) {
            p->prev->next = s;
        }
        else {
            a->first = s;
        }
        PyMem_Free(p);
    }
    if (n != NULL && n->state == SEG_FREE) {
        freev_remove(h, n);
        s->stop = n->stop;
        s->next = n->next;
        if (n->next != NULL) {
            n->next->prev = s;
        }
        PyMem_Free(n);
    }
    if (a->n_used == 0 && a->obj->map.size >= h->discard_limit) {
        /* The arena is one free segment now: release it. */
        Py_ssize_t i = 0;
        while (h->arenas[i] != a) {
            i++;
        }
        memmove(h->arenas + i, h->arenas + i + 1,
                (size_t)(h->n_arenas - i - 1) * sizeof(arec *));
        h->n_arenas--;
        PyMem_Free(s);
        Py_DECREF(a->obj);
        PyMem_Free(a);
        return;
    }
    freev_insert(h, s);
}

static void
heap_drain_pending(HeapObject *h)
{
    while (h->n_pending > 0) {
        if (freev_reserve(h, 1) < 0) {
            return; /* try again next time */
        }
        heap_apply_free(h, h->pending[--h->n_pending]);
    }
}

/* Return a segment; called by HeapBlock's dealloc and by Heap.free(). */
static void
heap_give_back(HeapObject *h, seg *s)
{
    if (PyThread_acquire_lock(h->lock, NOWAIT_LOCK)) {
        heap_drain_pending(h);
        if (freev_reserve(h, 1) == 0) {
            heap_apply_free(h, s);
            PyThread_release_lock(h->lock);
            return;
        }
        PyThread_release_lock(h->lock);
    }
    /* The lock is busy (maybe held by this very thread, which the garbage
       collector interrupted): queue the free. */
    if (h->n_pending == h->cap_pending) {
        Py_ssize_t cap = h->cap_pending ? h->cap_pending * 2 : 16;
        seg **v = PyMem_Realloc(h->pending, (size_t)cap * sizeof(seg *));
        if (v == NULL) {
            /* Keep the segment marked in use: the bytes are lost to this
               heap, which is safe. */
            return;
        }
        h->pending = v;
        h->cap_pending = cap;
    }
    h->pending[h->n_pending++] = s;
}

/* A new arena large enough for `len` bytes, as one free segment (lock
   held; capacity for the segment reserved).  -1 with an exception set. */
static seg *
heap_grow(HeapObject *h, size_t len)
{
    cmp_state *st = heap_state((PyObject *)h);
    if (st == NULL) {
        return NULL;
    }
    size_t page = cmp_shm_page_size();
    size_t want = len > h->size ? len : h->size;
    if (want > (size_t)PY_SSIZE_T_MAX - page) {
        PyErr_Format(PyExc_OverflowError, "Size %zu too large", len);
        return NULL;
    }
    want = (want + page - 1) / page * page;
    if (h->n_arenas == h->cap_arenas) {
        Py_ssize_t cap = h->cap_arenas ? h->cap_arenas * 2 : 8;
        arec **v = PyMem_Realloc(h->arenas, (size_t)cap * sizeof(arec *));
        if (v == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        h->arenas = v;
        h->cap_arenas = cap;
    }
    arec *a = PyMem_Malloc(sizeof(arec));
    seg *s = PyMem_Malloc(sizeof(seg));
    if (a == NULL || s == NULL) {
        PyMem_Free(a);
        PyMem_Free(s);
        PyErr_NoMemory();
        return NULL;
    }
    ArenaObject *obj = arena_create(st, want);
    if (obj == NULL) {
        PyMem_Free(a);
        PyMem_Free(s);
        return NULL;
    }
    if (h->size < h->double_until) {
        h->size *= 2;
    }
    a->obj = obj;
    a->first = s;
    a->n_used = 0;
    s->prev = s->next = NULL;
    s->arena = a;
    s->start = 0;
    s->stop = want;
    s->state = SEG_FREE;
    h->arenas[h->n_arenas++] = a;
    return s;
}

/* A block size from Python: ValueError when negative, OverflowError when
   not below sys.maxsize (the stdlib's messages). */
static int
heap_check_size(PyObject *obj, Py_ssize_t *size)
{
    PyObject *idx = PyNumber_Index(obj);
    if (idx == NULL) {
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(idx);
        return -1;
    }
    if (overflow < 0 || (!overflow && v < 0)) {
        PyErr_Format(PyExc_ValueError, "Size %S out of range", idx);
        Py_DECREF(idx);
        return -1;
    }
    if (overflow > 0 || v >= (long long)PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_OverflowError, "Size %S too large", idx);
        Py_DECREF(idx);
        return -1;
    }
    Py_DECREF(idx);
    *size = (Py_ssize_t)v;
    return 0;
}

/* Carve `size` bytes (rounded up to the alignment) out of the heap; the
   segment is marked `state`.  NULL with an exception set on failure. */
static seg *
heap_take(HeapObject *h, Py_ssize_t size, int state)
{
    size_t len = size < 1 ? 1 : (size_t)size;
    len = (len + HEAP_ALIGNMENT - 1) & ~(size_t)(HEAP_ALIGNMENT - 1);
    if (cmp_heap_check_fork(h) < 0 || heap_lock_wait(h) < 0) {
        return NULL;
    }
    heap_drain_pending(h);
    seg *s = NULL;
    /* Room for: the remainder of a split, or a new arena's segment. */
    if (freev_reserve(h, 2) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    s = freev_best_fit(h, len);
    if (s != NULL) {
        freev_remove(h, s);
    }
    else {
        s = heap_grow(h, len);
        if (s == NULL) {
            goto done;
        }
    }
    if (s->stop - s->start > len) {
        seg *rest = PyMem_Malloc(sizeof(seg));
        if (rest == NULL) {
            freev_insert(h, s);
            s = NULL;
            PyErr_NoMemory();
            goto done;
        }
        rest->arena = s->arena;
        rest->start = s->start + len;
        rest->stop = s->stop;
        rest->state = SEG_FREE;
        rest->prev = s;
        rest->next = s->next;
        if (s->next != NULL) {
            s->next->prev = rest;
        }
        s->next = rest;
        s->stop = rest->start;
        freev_insert(h, rest);
    }
    s->state = state;
    s->arena->n_used++;
    h->n_mallocs++;
done:
    PyThread_release_lock(h->lock);
    return s;
}

/* ==== HeapBlock ====================================================== */

static PyObject *
block_make(cmp_state *st, HeapObject *heap, ArenaObject *arena, seg *s,
           size_t start, Py_ssize_t size)
{
    PyTypeObject *tp = (PyTypeObject *)st->HeapBlock_type;
    BlockObject *b = PyObject_GC_New(BlockObject, tp);
    if (b == NULL) {
        return NULL;
    }
    b->heap = (HeapObject *)Py_XNewRef((PyObject *)heap);
    b->arena = (ArenaObject *)Py_NewRef((PyObject *)arena);
    b->seg = s;
    b->generation = heap != NULL ? heap->generation : 0;
    b->start = start;
    b->size = size;
    b->exports = 0;
    b->weakreflist = NULL;
    PyObject_GC_Track(b);
    return (PyObject *)b;
}

static void
block_dealloc(BlockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    HeapObject *h = self->heap;
    if (h != NULL && self->seg != NULL && h->generation == self->generation &&
        h->epoch == cmp_fork_epoch()) {
        heap_give_back(h, self->seg);
    }
    Py_XDECREF(self->heap);
    Py_XDECREF(self->arena);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int
block_traverse(BlockObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->heap);
    Py_VISIT(self->arena);
    return 0;
}

static int
block_getbuffer(BlockObject *self, Py_buffer *view, int flags)
{
    char *addr = self->arena->map.addr;
    if (addr == NULL) {
        PyErr_SetString(PyExc_ValueError, "arena is not mapped");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, addr + self->start,
                          self->size, 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    size_t end = self->start + (size_t)self->size;
    if (end > self->arena->clean_from) {
        self->arena->clean_from = end;
    }
    return 0;
}

static void
block_releasebuffer(BlockObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyObject *
block_get_arena(BlockObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef((PyObject *)self->arena);
}

static PyObject *
block_get_start(BlockObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(self->start);
}

static PyObject *
block_get_size(BlockObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->size);
}

static PyObject *
block_get_heap(BlockObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->heap != NULL ? (PyObject *)self->heap : Py_None);
}

/* (arena, start, stop) as the stdlib's Heap.malloc() returns it; stop is
   that of the rounded-up segment while the segment is ours. */
static PyObject *
block_get_block(BlockObject *self, void *closure)
{
    (void)closure;
    size_t stop = self->start + (size_t)self->size;
    HeapObject *h = self->heap;
    if (h != NULL && self->seg != NULL && h->generation == self->generation &&
        h->epoch == cmp_fork_epoch()) {
        stop = self->seg->stop;
    }
    return Py_BuildValue("(Onn)", (PyObject *)self->arena,
                         (Py_ssize_t)self->start, (Py_ssize_t)stop);
}

static PyObject *
block_repr(BlockObject *self)
{
    return PyUnicode_FromFormat("<HeapBlock %zu+%zd of %R>", self->start,
                                self->size, (PyObject *)self->arena);
}

static PyGetSetDef block_getset[] = {
    {"arena", (getter)block_get_arena, NULL, "The arena holding the block.",
     NULL},
    {"start", (getter)block_get_start, NULL, "Offset in the arena.", NULL},
    {"size", (getter)block_get_size, NULL, "Usable length in bytes.", NULL},
    {"heap", (getter)block_get_heap, NULL,
     "The heap the block returns to, or None.", NULL},
    {"block", (getter)block_get_block, NULL, "(arena, start, stop).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef block_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(BlockObject, weakreflist),
     Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot block_slots[] = {
    {Py_tp_dealloc, block_dealloc},
    {Py_tp_traverse, block_traverse},
    {Py_tp_repr, block_repr},
    {Py_tp_getset, block_getset},
    {Py_tp_members, block_members},
    {Py_bf_getbuffer, block_getbuffer},
    {Py_bf_releasebuffer, block_releasebuffer},
    {Py_tp_doc, "A block of a heap arena; its bytes go back to the heap "
                "when it is destroyed."},
    {0, NULL},
};

static PyType_Spec block_spec = {
    .name = "_cmultiprocessing.HeapBlock",
    .basicsize = sizeof(BlockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = block_slots,
};

/* ==== Heap ============================================================ */

static PyObject *
heap_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"size"};
    static const cmp_argspec spec = CMP_ARGSPEC("Heap", names, 0);
    PyObject *a[1];
    Py_ssize_t n = (Py_ssize_t)cmp_shm_page_size();
    if (cmp_parse_tuple(&spec, args, kwds, a) < 0 ||
        (a[0] != NULL && cmp_arg_ssize(a[0], &n) < 0)) {
        return NULL;
    }
    if (n <= 0) {
        PyErr_Format(PyExc_ValueError,
                     "initial arena size must be positive, not %zd", n);
        return NULL;
    }
    size_t size = (size_t)n;
    HeapObject *h = (HeapObject *)tp->tp_alloc(tp, 0);
    if (h == NULL) {
        return NULL;
    }
    h->lock = PyThread_allocate_lock();
    if (h->lock == NULL) {
        Py_DECREF(h);
        return PyErr_NoMemory();
    }
    h->epoch = cmp_fork_epoch();
    h->pid = heap_getpid();
    h->size = h->initial_size = size;
    h->discard_limit = HEAP_DEFAULT_DISCARD;
    h->double_until = HEAP_DEFAULT_DOUBLE_UNTIL;
    return (PyObject *)h;
}

static int
heap_traverse(HeapObject *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        Py_VISIT((PyObject *)h->arenas[i]->obj);
    }
    return 0;
}

static void
heap_dealloc(HeapObject *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    PyObject_GC_UnTrack(h);
    /* No block is alive (each holds a reference), so every segment is
       free or was handed out by malloc() and never freed. */
    heap_forget_everything(h);
    PyMem_Free(h->arenas);
    PyMem_Free(h->freev);
    PyMem_Free(h->pending);
    if (h->lock != NULL) {
        PyThread_free_lock(h->lock);
    }
    tp->tp_free(h);
    Py_DECREF(tp);
}

/* heap.take(size) -> HeapBlock: `size` zeroed bytes, returned to the heap
   when the block object dies. */
static PyObject *
heap_take_method(HeapObject *h, PyObject *arg)
{
    Py_ssize_t size;
    if (heap_check_size(arg, &size) < 0) {
        return NULL;
    }
    cmp_state *st = heap_state((PyObject *)h);
    if (st == NULL) {
        return NULL;
    }
    seg *s = heap_take(h, size, SEG_BLOCK);
    if (s == NULL) {
        return NULL;
    }
    /* Zero what an earlier block may have dirtied; past clean_from the
       memory is still as the system gave it. */
    ArenaObject *arena = s->arena->obj;
    if (s->start < arena->clean_from) {
        size_t end = s->start + (size_t)size;
        if (end > arena->clean_from) {
            end = arena->clean_from;
        }
        memset(arena->map.addr + s->start, 0, end - s->start);
    }
    PyObject *b = block_make(st, h, s->arena->obj, s, s->start, size);
    if (b == NULL) {
        heap_give_back(h, s);
    }
    return b;
}

/* heap.malloc(size) -> (arena, start, stop), as the stdlib's Heap. */
static PyObject *
heap_malloc_method(HeapObject *h, PyObject *arg)
{
    Py_ssize_t size;
    if (heap_check_size(arg, &size) < 0) {
        return NULL;
    }
    seg *s = heap_take(h, size, SEG_TUPLE);
    if (s == NULL) {
        return NULL;
    }
    size_t used = size < 1 ? 1 : (size_t)size;
    used = (used + HEAP_ALIGNMENT - 1) & ~(size_t)(HEAP_ALIGNMENT - 1);
    PyObject *r = Py_BuildValue("(Onn)", (PyObject *)s->arena->obj,
                                (Py_ssize_t)s->start,
                                (Py_ssize_t)(s->start + used));
    if (r == NULL) {
        heap_give_back(h, s);
    }
    return r;
}

/* heap.free((arena, start, stop)): a block that malloc() returned. */
static PyObject *
heap_free_method(HeapObject *h, PyObject *arg)
{
    PyObject *arena_obj;
    Py_ssize_t start, stop;
    if (!PyTuple_Check(arg)) {
        PyErr_SetString(PyExc_TypeError,
                        "block must be a tuple (arena, start, stop)");
        return NULL;
    }
    if (PyTuple_GET_SIZE(arg) != 3) {
        PyErr_SetString(PyExc_TypeError, "block must be (arena, start, stop)");
        return NULL;
    }
    arena_obj = PyTuple_GET_ITEM(arg, 0);
    if (cmp_arg_ssize(PyTuple_GET_ITEM(arg, 1), &start) < 0 ||
        cmp_arg_ssize(PyTuple_GET_ITEM(arg, 2), &stop) < 0) {
        return NULL;
    }
    if (cmp_heap_check_fork(h) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < h->n_arenas; i++) {
        arec *a = h->arenas[i];
        if ((PyObject *)a->obj != arena_obj) {
            continue;
        }
        for (seg *s = a->first; s != NULL; s = s->next) {
            if ((Py_ssize_t)s->start == start && (Py_ssize_t)s->stop == stop) {
                if (s->state != SEG_TUPLE) {
                    break;
                }
                heap_give_back(h, s);
                Py_RETURN_NONE;
            }
        }
        break;
    }
    PyErr_Format(PyExc_ValueError,
                 "block %R was not allocated by malloc() of this heap in "
                 "this process, or was already freed",
                 arg);
    return NULL;
}

static PyMethodDef heap_methods[] = {
    {"take", (PyCFunction)heap_take_method, METH_O,
     "take($self, size, /)\n--\n\n"
     "A HeapBlock of `size` zeroed bytes, given back to the heap when the "
     "block object is destroyed."},
    {"malloc", (PyCFunction)heap_malloc_method, METH_O,
     "malloc($self, size, /)\n--\n\n"
     "A block as (arena, start, stop); give it back with free()."},
    {"free", (PyCFunction)heap_free_method, METH_O,
     "free($self, block, /)\n--\n\n"
     "Give back a block that malloc() returned."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot heap_slots[] = {
    {Py_tp_new, heap_new},
    {Py_tp_dealloc, heap_dealloc},
    {Py_tp_traverse, heap_traverse},
    {Py_tp_methods, heap_methods},
    {Py_tp_getset, cmp_heap_getset},
    {Py_tp_doc, "Heap(size=PAGESIZE)\n\nAllocator of aligned blocks in "
                "shared arenas."},
    {0, NULL},
};

static PyType_Spec heap_spec = {
    .name = "_cmultiprocessing.Heap",
    .basicsize = sizeof(HeapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = heap_slots,
};

/* ==== module ========================================================== */

int
cmp_heap_exec(PyObject *module)
{
    cmp_state *st = cmp_get_state(module);
    struct {
        PyType_Spec *spec;
        PyObject **slot;
        const char *name;
    } types[] = {
        {&arena_spec, &st->Arena_type, "Arena"},
        {&heap_spec, &st->Heap_type, "Heap"},
        {&block_spec, &st->HeapBlock_type, "HeapBlock"},
        {&cmp_heap_lock_spec, &st->HeapLock_type, "HeapLock"},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        *types[i].slot = PyType_FromModuleAndSpec(module, types[i].spec, NULL);
        if (*types[i].slot == NULL ||
            PyModule_AddObjectRef(module, types[i].name, *types[i].slot) < 0) {
            return -1;
        }
    }
    (void)cmp_fork_epoch(); /* installs the fork hook */
    return PyModule_AddIntConstant(module, "HEAP_ALIGNMENT", HEAP_ALIGNMENT);
}
