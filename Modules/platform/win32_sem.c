/* platform/win32_sem.c -- semaphores on Windows: unnamed kernel semaphore
 * objects whose handles are duplicated into child processes (so there is
 * nothing to unlink), bounded by the kernel at their maximum count. */
#include "platform/platform.h"

#ifdef CMP_WINDOWS

int
cmp_sem_create(const char *name, int value, int maxvalue, cmp_sem_t *out)
{
    (void)name;
    /* the kernel wants a maximum of at least 1; a bound of 0 is enforced
       by cmp_sem_post instead */
    HANDLE h = CreateSemaphoreA(NULL, (LONG)value,
                                (LONG)(maxvalue > 0 ? maxvalue : 1), NULL);
    if (h == NULL) {
        return (int)GetLastError();
    }
    *out = h;
    return 0;
}

int
cmp_sem_create_in(void *mem, size_t len, int value, cmp_sem_t *out)
{
    (void)mem;
    (void)len;
    (void)value;
    (void)out;
    return ERROR_NOT_SUPPORTED; /* kernel objects only */
}

int
cmp_sem_reopen(const char *name, cmp_sem_t inherited, cmp_sem_t *out)
{
    (void)name;
    *out = inherited;
    return 0;
}

int
cmp_sem_close(cmp_sem_t sem)
{
    return CloseHandle(sem) ? 0 : (int)GetLastError();
}

int
cmp_sem_unlink(const char *name)
{
    (void)name;
    return 0;
}

static int
wait_ms(cmp_sem_t sem, DWORD ms)
{
    switch (WaitForSingleObjectEx(sem, ms, FALSE)) {
    case WAIT_OBJECT_0:
        return CMP_OK;
    case WAIT_TIMEOUT:
        return CMP_BUSY;
    default:
        return (int)GetLastError();
    }
}

int
cmp_sem_trywait(cmp_sem_t sem)
{
    return wait_ms(sem, 0);
}

int
cmp_sem_wait_for(cmp_sem_t sem, double seconds)
{
    double ms = seconds > 0.0 ? seconds * 1000.0 + 0.999 : 0.0;
    if (ms > (double)(INFINITE - 1)) {
        ms = (double)(INFINITE - 1);
    }
    return wait_ms(sem, (DWORD)ms);
}

/* A kernel wait does not end for Ctrl-C: wait in slices, so that the
   caller gets to run the signal handlers between them. */
int
cmp_sem_wait(cmp_sem_t sem)
{
    return wait_ms(sem, (DWORD)(CMP_WAIT_SLICE * 1000.0));
}

int
cmp_sem_post(cmp_sem_t sem, int bound)
{
    /* the kernel enforces the maximum given at creation, except 0 */
    if (bound == 0) {
        return CMP_OVERFLOW;
    }
    if (ReleaseSemaphore(sem, 1, NULL)) {
        return 0;
    }
    DWORD err = GetLastError();
    return err == ERROR_TOO_MANY_POSTS ? CMP_OVERFLOW : (int)err;
}

int
cmp_sem_getvalue(cmp_sem_t sem, int *value)
{
    /* No direct query: take a unit if there is one and give it back,
       which reports the count before the give. */
    int rc = wait_ms(sem, 0);
    if (rc == CMP_BUSY) {
        *value = 0;
        return 0;
    }
    if (rc != CMP_OK) {
        return rc;
    }
    LONG before;
    if (!ReleaseSemaphore(sem, 1, &before)) {
        return (int)GetLastError();
    }
    *value = (int)before + 1;
    return 0;
}

int
cmp_sem_is_zero(cmp_sem_t sem, int *zero)
{
    int value = 0;
    int rc = cmp_sem_getvalue(sem, &value);
    if (rc == 0) {
        *zero = (value == 0);
    }
    return rc;
}

/* No wait on a word across processes (WaitOnAddress is per-process): the
   queues keep to their pipes (sem.h). */
int
cmp_addr_wait_available(void)
{
    return 0;
}

int
cmp_addr_wait(uint32_t *addr, uint32_t expected, double seconds)
{
    (void)addr;
    (void)expected;
    (void)seconds;
    return ERROR_NOT_SUPPORTED;
}

void
cmp_addr_wake(uint32_t *addr)
{
    (void)addr;
}

#endif /* CMP_WINDOWS */
