/* platform/win32_npipe.c -- Windows named pipes (platform/npipe.h): the
 * Ctrl-C event that every blocking wait of the Windows layer also waits
 * on, the wait for one overlapped operation, and the server and client
 * ends of named pipes.
 */
#include "platform/npipe.h"

#ifdef CMP_WINDOWS
#  include <stdio.h>
#  include <string.h>

/* ---- Ctrl-C --------------------------------------------------------------

   A console control handler added after Python's (the CRT's, which calls
   Python's SIGINT handler) runs before it -- handlers are called last
   added first -- and returns FALSE so that Python's still runs.  Because
   ours runs first, a waiter it wakes may reach PyErr_CheckSignals() before
   Python has noted the signal; so the event stays set for a moment
   (INTERRUPT_GRACE_MS), during which every wait returns at once and the
   caller re-checks, and only then is it treated as seen and reset. */

#  define INTERRUPT_GRACE_MS 200

static HANDLE interrupt_event;
static volatile LONGLONG interrupt_tick;

static void
note_interrupt(void)
{
    InterlockedExchange64(&interrupt_tick, (LONGLONG)GetTickCount64());
    SetEvent(interrupt_event);
}

static BOOL WINAPI
on_console_control(DWORD type)
{
    if (type == CTRL_C_EVENT || type == CTRL_BREAK_EVENT) {
        note_interrupt();
    }
    return FALSE;
}

static BOOL CALLBACK
make_interrupt_event(PINIT_ONCE once, PVOID param, PVOID *context)
{
    (void)once;
    (void)param;
    (void)context;
    interrupt_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (interrupt_event != NULL &&
        !SetConsoleCtrlHandler(on_console_control, TRUE)) {
        CloseHandle(interrupt_event);
        interrupt_event = NULL;
    }
    return TRUE;
}

HANDLE
cmp_io_interrupt_event(void)
{
    static INIT_ONCE once = INIT_ONCE_STATIC_INIT;
    InitOnceExecuteOnce(&once, make_interrupt_event, NULL, NULL);
    return interrupt_event;
}

void
cmp_io_interrupt_notify(void)
{
    if (cmp_io_interrupt_event() != NULL) {
        note_interrupt();
    }
}

int
cmp_io_interrupt_pending(void)
{
    HANDLE ev = cmp_io_interrupt_event();
    if (ev == NULL || WaitForSingleObject(ev, 0) != WAIT_OBJECT_0) {
        return 0;
    }
    ULONGLONG age = GetTickCount64() - (ULONGLONG)interrupt_tick;
    if (age < INTERRUPT_GRACE_MS) {
        return 1;
    }
    ResetEvent(ev);     /* seen long ago: Python has had its turn */
    return 0;
}

/* ---- one overlapped operation --------------------------------------------- */

int
cmp_io_overlapped_wait(HANDLE h, OVERLAPPED *ov, DWORD ms, DWORD *n)
{
    HANDLE events[2];
    DWORD count = 1;
    int cancelled_by = 0;
    ULONGLONG start = GetTickCount64();

    events[0] = ov->hEvent;
    events[1] = cmp_io_interrupt_event();
    if (events[1] != NULL) {
        count = 2;
    }
    for (;;) {
        DWORD left = ms;
        if (ms != INFINITE) {
            ULONGLONG spent = GetTickCount64() - start;
            left = spent >= ms ? 0 : ms - (DWORD)spent;
        }
        DWORD w = WaitForMultipleObjects(count, events, FALSE, left);
        if (w == WAIT_OBJECT_0) {
            break;
        }
        if (w == WAIT_OBJECT_0 + 1) {
            if (!cmp_io_interrupt_pending()) {
                continue;       /* a stale Ctrl-C, now reset */
            }
            cancelled_by = CMP_INTR;
        }
        else if (w == WAIT_TIMEOUT) {
            cancelled_by = WAIT_TIMEOUT;
        }
        else {
            cancelled_by = (int)GetLastError();
        }
        CancelIoEx(h, ov);
        break;
    }
    /* Completed, or cancelled: either way the operation is over once
       GetOverlappedResult has waited for it. */
    *n = 0;
    if (GetOverlappedResult(h, ov, n, TRUE)) {
        return 0;
    }
    DWORD err = GetLastError();
    if (err == ERROR_OPERATION_ABORTED && cancelled_by != 0) {
        return cancelled_by;
    }
    return (int)err;
}

/* ---- the I/O mode of a handle ---------------------------------------------- */

typedef struct {
    union {
        LONG Status;
        PVOID Pointer;
    } u;
    ULONG_PTR Information;
} cmp_np_io_status;

typedef LONG(NTAPI *cmp_np_query_fn)(HANDLE, cmp_np_io_status *, PVOID, ULONG,
                                     int);

#  define CMP_NP_FILE_MODE_INFORMATION 16
#  define CMP_NP_FILE_SYNCHRONOUS_IO 0x30   /* _ALERT | _NONALERT */

int
cmp_win32_query_file(HANDLE h, void *info, unsigned long size, int info_class)
{
    /* NtQueryInformationFile, looked up once (a race stores the same) */
    static volatile LONG looked_up;
    static cmp_np_query_fn query;
    if (!looked_up) {
        HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
        FARPROC p = ntdll ? GetProcAddress(ntdll, "NtQueryInformationFile")
                          : NULL;
        /* FARPROC to a function pointer of another type: through void* */
        query = (cmp_np_query_fn)(void *)p;
        looked_up = 1;
    }
    cmp_np_io_status iosb;
    if (query == NULL) {
        return ERROR_NOT_SUPPORTED;
    }
    memset(&iosb, 0, sizeof(iosb));
    if (query(h, &iosb, info, (ULONG)size, info_class) < 0) {
        /* not a handle of that kind, or not one we may query */
        return ERROR_INVALID_HANDLE;
    }
    return 0;
}

int
cmp_io_is_overlapped(HANDLE h)
{
    ULONG mode = 0;
    if (cmp_win32_query_file(h, &mode, (unsigned long)sizeof(mode),
                             CMP_NP_FILE_MODE_INFORMATION) != 0) {
        return 0;
    }
    return (mode & CMP_NP_FILE_SYNCHRONOUS_IO) == 0;
}

/* ---- named pipes ----------------------------------------------------------- */

int
cmp_npipe_create(const wchar_t *name, int flags, HANDLE *server)
{
    DWORD open_mode = FILE_FLAG_OVERLAPPED;
    DWORD out_size = CMP_NPIPE_BUFSIZE;
    open_mode |= (flags & CMP_NPIPE_DUPLEX) ? PIPE_ACCESS_DUPLEX
                                            : PIPE_ACCESS_INBOUND;
    if (!(flags & CMP_NPIPE_DUPLEX)) {
        out_size = 0;           /* the server only reads */
    }
    if (flags & CMP_NPIPE_FIRST) {
        open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
    }
    DWORD instances = (flags & CMP_NPIPE_ONLY) ? 1 : PIPE_UNLIMITED_INSTANCES;
    HANDLE h = CreateNamedPipeW(name, open_mode,
                                PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE |
                                    PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                                instances, out_size, CMP_NPIPE_BUFSIZE, 0,
                                NULL);
    if (h == INVALID_HANDLE_VALUE) {
        return (int)GetLastError();
    }
    *server = h;
    return 0;
}

int
cmp_npipe_accept(HANDLE server, double timeout, int *connected)
{
    OVERLAPPED ov;
    memset(&ov, 0, sizeof(ov));
    *connected = 0;
    ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov.hEvent == NULL) {
        return (int)GetLastError();
    }
    int err = 0;
    if (ConnectNamedPipe(server, &ov)) {
        *connected = 1;
    }
    else {
        DWORD e = GetLastError();
        if (e == ERROR_PIPE_CONNECTED || e == ERROR_NO_DATA) {
            /* connected before we asked (and maybe gone already) */
            *connected = 1;
        }
        else if (e != ERROR_IO_PENDING) {
            err = (int)e;
        }
        else {
            DWORD n = 0;
            err = cmp_io_overlapped_wait(server, &ov,
                                         cmp_win32_wait_ms(timeout), &n);
            if (err == 0 || err == ERROR_NO_DATA) {
                *connected = 1;
                err = 0;
            }
            else if (err == WAIT_TIMEOUT) {
                err = 0;
            }
        }
    }
    CloseHandle(ov.hEvent);
    return err;
}

static int
set_message_mode(HANDLE h)
{
    DWORD mode = PIPE_READMODE_MESSAGE;
    return SetNamedPipeHandleState(h, &mode, NULL, NULL) ? 0
                                                         : (int)GetLastError();
}

int
cmp_npipe_connect(const wchar_t *name, int flags, double timeout,
                  HANDLE *client)
{
    DWORD access = (flags & CMP_NPIPE_DUPLEX) ? GENERIC_READ | GENERIC_WRITE
                                              : GENERIC_WRITE;
    DWORD limit = cmp_win32_wait_ms(timeout);
    ULONGLONG start = GetTickCount64();
    for (;;) {
        HANDLE h = CreateFileW(name, access, 0, NULL, OPEN_EXISTING,
                               FILE_FLAG_OVERLAPPED, NULL);
        if (h != INVALID_HANDLE_VALUE) {
            int err = set_message_mode(h);
            if (err != 0) {
                CloseHandle(h);
                return err;
            }
            *client = h;
            return 0;
        }
        DWORD e = GetLastError();
        if (e != ERROR_PIPE_BUSY) {
            return (int)e;
        }
        /* every instance is taken: wait for one to be free, in short
           steps so that Ctrl-C is seen */
        DWORD step = 50;
        if (limit != INFINITE) {
            ULONGLONG spent = GetTickCount64() - start;
            if (spent >= limit) {
                return ERROR_SEM_TIMEOUT;
            }
            if (limit - spent < step) {
                step = (DWORD)(limit - spent);
            }
        }
        if (cmp_io_interrupt_pending()) {
            return CMP_INTR;
        }
        if (!WaitNamedPipeW(name, step == 0 ? 1 : step)) {
            e = GetLastError();
            if (e != ERROR_SEM_TIMEOUT && e != ERROR_PIPE_BUSY) {
                return (int)e;     /* e.g. the server went away */
            }
        }
    }
}

int
cmp_npipe_pair(int duplex, HANDLE ends[2])
{
    static volatile LONG serial;
    wchar_t name[96];
    int flags = CMP_NPIPE_FIRST | CMP_NPIPE_ONLY |
                (duplex ? CMP_NPIPE_DUPLEX : 0);
    HANDLE server = INVALID_HANDLE_VALUE, client = INVALID_HANDLE_VALUE;
    int err = ERROR_PIPE_BUSY;

    /* A name nobody else has: FILE_FLAG_FIRST_PIPE_INSTANCE refuses one
       that is taken (ERROR_ACCESS_DENIED), and a few tries get past a
       squatter. */
    for (int attempt = 0; attempt < 8 && err != 0; attempt++) {
        swprintf(name, sizeof(name) / sizeof(name[0]),
                 L"\\\\.\\pipe\\cmp-%lu-%ld-%llu",
                 (unsigned long)GetCurrentProcessId(),
                 (long)InterlockedIncrement(&serial),
                 (unsigned long long)GetTickCount64());
        err = cmp_npipe_create(name, flags, &server);
        if (err != 0 && err != ERROR_ACCESS_DENIED && err != ERROR_PIPE_BUSY) {
            return err;
        }
    }
    if (err != 0) {
        return err;
    }
    err = cmp_npipe_connect(name, flags, 0.0, &client);
    if (err == 0) {
        int connected = 0;
        err = cmp_npipe_accept(server, 5.0, &connected);
        if (err == 0 && !connected) {
            err = ERROR_PIPE_NOT_CONNECTED;
        }
    }
    if (err != 0) {
        if (client != INVALID_HANDLE_VALUE) {
            CloseHandle(client);
        }
        CloseHandle(server);
        return err;
    }
    ends[0] = server;
    ends[1] = client;
    return 0;
}

#endif /* CMP_WINDOWS */
