/* platform/win32_common.c -- helpers of the Windows layer shared by every
   concern: the monotonic clock behind every deadline; and the internal
   ones of win32_internal.h. */
#include "platform/platform.h"
#include "platform/win32_internal.h"

#include <math.h>

#ifdef CMP_WINDOWS

/* QueryPerformanceCounter never goes backwards and is not moved by clock
   changes (Windows XP and later: it cannot fail).  The frequency is fixed
   at boot, so it is read once; a racing first read just stores the same
   value twice. */
double
cmp_monotonic(void)
{
    static volatile LONGLONG ticks_per_second;
    LARGE_INTEGER now;
    LONGLONG freq = ticks_per_second;

    if (freq == 0) {
        LARGE_INTEGER f;
        if (!QueryPerformanceFrequency(&f) || f.QuadPart <= 0) {
            /* not reachable on supported systems; milliseconds still
               give a usable clock */
            return (double)GetTickCount64() * 1e-3;
        }
        freq = f.QuadPart;
        ticks_per_second = freq;
    }
    QueryPerformanceCounter(&now);
    /* whole seconds and remainder apart, so that large counts keep their
       sub-microsecond digits in the double */
    return (double)(now.QuadPart / freq) +
           (double)(now.QuadPart % freq) / (double)freq;
}

DWORD
cmp_win32_wait_ms(double timeout)
{
    if (timeout < 0.0) {
        return INFINITE;
    }
    double ms = ceil(timeout * 1000.0);
    return ms >= (double)INFINITE ? INFINITE - 1 : (DWORD)ms;
}

int
cmp_cpu_count(void)
{
    DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    return n < 1 ? 1 : (n > 4096 ? 4096 : (int)n);
}

int
cmp_runnable_threads(int *count)
{
    /* no documented, cheap count of ready threads */
    (void)count;
    return ERROR_CALL_NOT_IMPLEMENTED;
}

void
cmp_yield(void)
{
    (void)SwitchToThread();
}

void
cmp_sleep(double seconds)
{
    Sleep(cmp_win32_wait_ms(seconds));
}

/* A slim reader/writer lock needs no set-up and cannot fail. */
static SRWLOCK process_lock = SRWLOCK_INIT;

void
cmp_process_lock(void)
{
    AcquireSRWLockExclusive(&process_lock);
}

void
cmp_process_unlock(void)
{
    ReleaseSRWLockExclusive(&process_lock);
}
int
cmp_win32_is_socket(cmp_handle_t h)
{
    int type = 0;
    int len = (int)sizeof(type);
    return getsockopt(cmp_win32_as_socket(h), SOL_SOCKET, SO_TYPE,
                      (char *)&type, &len) == 0;
}

/* ---- process identity (robust.h's owner records) ---------------------- */

/* The low 32 bits of a process's creation time (100 ns units). */
static int
creation_low(HANDLE process, uint32_t *low)
{
    FILETIME created, exited, kernel, user;
    if (!GetProcessTimes(process, &created, &exited, &kernel, &user)) {
        return (int)GetLastError();
    }
    *low = (uint32_t)created.dwLowDateTime;
    return 0;
}

uint64_t
cmp_proc_self_tag(void)
{
    static uint64_t tag;
    if (tag == 0) {
        uint32_t low = 0;
        (void)creation_low(GetCurrentProcess(), &low);
        tag = ((uint64_t)GetCurrentProcessId() << 32) | low;
    }
    return tag;
}

int
cmp_proc_tag_gone(uint64_t tag, int *gone)
{
    *gone = 0;
    HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE,
                           FALSE, (DWORD)(tag >> 32));
    if (h == NULL) {
        DWORD err = GetLastError();
        if (err == ERROR_INVALID_PARAMETER) {
            *gone = 1; /* no such process */
            return 0;
        }
        return err == ERROR_ACCESS_DENIED ? 0 : (int)err;
    }
    uint32_t low = 0;
    int err = creation_low(h, &low);
    if (err == 0) {
        *gone = WaitForSingleObject(h, 0) == WAIT_OBJECT_0 ||
                low != (uint32_t)tag;
    }
    (void)CloseHandle(h);
    return err;
}

#endif /* CMP_WINDOWS */
