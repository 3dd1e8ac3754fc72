/*
 * heap.h -- what heap.c (the arena heap: Arena, Heap, HeapBlock) shares
 * with heap_views.c (the views of its state that the stdlib's tests read,
 * and Heap._lock): the objects' layout and the few heap operations the
 * views need.
 */
#ifndef CMP_HEAP_H
#define CMP_HEAP_H

#include "cmp.h"

#define HEAP_ALIGNMENT 8
#define HEAP_DEFAULT_DISCARD ((size_t)4 << 20)
#define HEAP_DEFAULT_DOUBLE_UNTIL ((size_t)4 << 20)

enum seg_state { SEG_FREE = 0, SEG_BLOCK = 1, SEG_TUPLE = 2 };

typedef struct seg seg;
typedef struct arec arec;

struct seg {
    seg *prev, *next; /* address order inside the arena */
    arec *arena;
    size_t start, stop;
    int state;
};

typedef struct {
    PyObject_HEAD
    cmp_mapping map;
    Py_ssize_t exports;
    /* Bytes from here to the end have never been written in this process
       and are zero (fresh anonymous memory): take() need not clear them,
       and big arrays are not faulted in before they are used. */
    size_t clean_from;
    PyObject *weakreflist;
} ArenaObject;

struct arec {
    ArenaObject *obj; /* strong reference */
    seg *first;
    size_t n_used;
};

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    unsigned long epoch;      /* cmp_fork_epoch() when last reset */
    unsigned long generation; /* bumped by every reset */
    long pid;
    arec **arenas;
    Py_ssize_t n_arenas, cap_arenas;
    seg **freev; /* free segments sorted by (length, address) */
    Py_ssize_t n_free, cap_free;
    seg **pending; /* frees that could not take the lock */
    Py_ssize_t n_pending, cap_pending;
    Py_ssize_t n_mallocs, n_frees;
    size_t size, initial_size;
    size_t discard_limit, double_until;
} HeapObject;

typedef struct {
    PyObject_HEAD
    HeapObject *heap;   /* NULL: a view of an inherited arena */
    ArenaObject *arena;
    seg *seg;
    unsigned long generation;
    size_t start;
    Py_ssize_t size;
    Py_ssize_t exports;
    PyObject *weakreflist;
} BlockObject;

typedef struct {
    PyObject_HEAD
    HeapObject *heap;
} LockObject;

/* Reset the heap in a forked child (heap.c); 0 or -1. */
int cmp_heap_after_fork(HeapObject *h);

/* Every entry point calls this first: a forked child starts afresh. */
static inline int
cmp_heap_check_fork(HeapObject *h)
{
    if (h->epoch != cmp_fork_epoch()) {
        return cmp_heap_after_fork(h);
    }
    return 0;
}

/* Take the heap's lock: at once if free, else waiting with the GIL
   released until the deadline (wait.h).  1 taken, 0 timed out, -1 error
   (a signal handler raised). */
int cmp_heap_lock_until(HeapObject *h, const cmp_deadline *d);

/* heap_views.c: Heap's attributes (the views and the tunables) and the
   type of Heap._lock. */
extern PyGetSetDef cmp_heap_getset[];
extern PyType_Spec cmp_heap_lock_spec;

#endif /* CMP_HEAP_H */
