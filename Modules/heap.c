/* heap.c -- not written yet; see cmp.h. */
#include "cmp.h"

int
cmp_heap_exec(PyObject *module)
{
    (void)module;
    return 0;
}
