/* platform/win32_io.c -- Windows implementation of platform/io.h.
 *
 * A connection handle is a SOCKET (AF_INET Listener/Client connections)
 * or a pipe HANDLE: the named pipes of Pipe() and AF_PIPE (win32_npipe.c),
 * opened FILE_FLAG_OVERLAPPED, or an anonymous pipe.  Sockets use Winsock
 * (recv/WSASend/WSAPoll).  Pipes are read and written with an OVERLAPPED
 * structure and its event (which also works on a handle opened for
 * synchronous I/O: the call then completes before it returns); a pending
 * operation is waited for together with the Ctrl-C event, and Ctrl-C
 * cancels it (CancelIoEx) and returns CMP_IO_INTERRUPTED.  A read that
 * gets part of a message (ERROR_MORE_DATA) returns what it got: the rest
 * comes with the next read.  A broken pipe reads as end of file.
 * Waiting on a mix of sockets and other handles has no single system call:
 * it polls each kind in turn with a short wait on the Ctrl-C event between
 * rounds (WSAPoll alone when all are sockets).
 */
#include "platform/platform.h"
#include "platform/npipe.h"

#ifdef CMP_WINDOWS
#include <winsock2.h>
#include <stdlib.h>
#include <string.h>

long long
cmp_io_handle_value(cmp_handle_t h)
{
    return (long long)(uintptr_t)h;
}

int
cmp_io_handle_from_value(long long value, cmp_handle_t *h)
{
    if (value < 0 || (uintptr_t)value == (uintptr_t)INVALID_SOCKET) {
        return ERROR_INVALID_HANDLE;
    }
    *h = (cmp_handle_t)(uintptr_t)value;
    return 0;
}

static SOCKET
as_socket(cmp_handle_t h)
{
    return (SOCKET)(uintptr_t)h;
}

static int
is_socket(cmp_handle_t h)
{
    int type = 0;
    int len = (int)sizeof(type);
    return getsockopt(as_socket(h), SOL_SOCKET, SO_TYPE, (char *)&type,
                      &len) == 0;
}

int
cmp_io_kind(cmp_handle_t fd, int *kind)
{
    if (is_socket(fd)) {
        *kind = CMP_IO_KIND_SOCKET;
        return 0;
    }
    DWORD type = GetFileType(fd);
    if (type == FILE_TYPE_UNKNOWN && GetLastError() != NO_ERROR) {
        return (int)GetLastError();
    }
    *kind = type == FILE_TYPE_PIPE ? CMP_IO_KIND_PIPE : CMP_IO_KIND_OTHER;
    return 0;
}

/* The errors after which a pipe has no more to give: the writer has
   closed its end (or, on a server end, the client has gone). */
static int
pipe_ended(DWORD err)
{
    return err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED;
}

/* One ReadFile or WriteFile of `len` bytes on a pipe, waited for (with
   Ctrl-C) when it does not complete at once.  *n receives the bytes
   transferred.  ERROR_MORE_DATA (part of a message) counts as success. */
static int
pipe_transfer(HANDLE h, int writing, void *buf, DWORD len, DWORD *n)
{
    OVERLAPPED ov;
    memset(&ov, 0, sizeof(ov));
    *n = 0;
    ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov.hEvent == NULL) {
        return (int)GetLastError();
    }
    BOOL ok = writing ? WriteFile(h, buf, len, NULL, &ov)
                      : ReadFile(h, buf, len, NULL, &ov);
    int err = 0;
    if (ok) {
        err = GetOverlappedResult(h, &ov, n, FALSE) ? 0 : (int)GetLastError();
    }
    else {
        DWORD e = GetLastError();
        if (e == ERROR_IO_PENDING) {
            err = cmp_io_overlapped_wait(h, &ov, INFINITE, n);
        }
        else if (e == ERROR_MORE_DATA) {
            err = GetOverlappedResult(h, &ov, n, FALSE) ? 0
                                                        : (int)GetLastError();
        }
        else {
            err = (int)e;
        }
    }
    if (err == ERROR_MORE_DATA) {
        err = 0;
    }
    CloseHandle(ov.hEvent);
    return err;
}

int
cmp_io_pending(cmp_handle_t fd, size_t *avail)
{
    if (is_socket(fd)) {
        u_long n = 0;
        if (ioctlsocket(as_socket(fd), FIONREAD, &n) != 0) {
            return WSAGetLastError();
        }
        *avail = (size_t)n;
        return 0;
    }
    DWORD n = 0;
    if (!PeekNamedPipe(fd, NULL, 0, NULL, &n, NULL)) {
        DWORD err = GetLastError();
        if (pipe_ended(err)) {
            *avail = 0;     /* at end of file: a read returns at once */
            return 0;
        }
        return (int)err;
    }
    *avail = (size_t)n;
    return 0;
}

int
cmp_io_read(cmp_handle_t fd, int kind, void *buf, size_t len, int nowait,
            size_t *got)
{
    int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
    if (kind == CMP_IO_KIND_SOCKET) {
        if (nowait) {
            u_long n = 0;
            if (ioctlsocket(as_socket(fd), FIONREAD, &n) != 0) {
                return WSAGetLastError();
            }
            if (n == 0) {
                return WSAEWOULDBLOCK;
            }
            if ((size_t)n < (size_t)chunk) {
                chunk = (int)n;
            }
        }
        int r = recv(as_socket(fd), (char *)buf, chunk, nowait ? 0 : MSG_WAITALL);
        if (r == SOCKET_ERROR) {
            return WSAGetLastError();
        }
        *got = (size_t)r;
        return 0;
    }
    if (kind == CMP_IO_KIND_PIPE) {
        if (nowait) {
            /* only what is there: a read of that much cannot block */
            DWORD avail = 0;
            if (!PeekNamedPipe(fd, NULL, 0, NULL, &avail, NULL)) {
                DWORD err = GetLastError();
                if (pipe_ended(err)) {
                    *got = 0;
                    return 0;
                }
                return (int)err;
            }
            if (avail == 0) {
                return WSAEWOULDBLOCK;
            }
            if ((size_t)avail < (size_t)chunk) {
                chunk = (int)avail;
            }
        }
        DWORD n = 0;
        int err = pipe_transfer(fd, 0, buf, (DWORD)chunk, &n);
        if (pipe_ended((DWORD)err)) {
            *got = 0;
            return 0;
        }
        *got = (size_t)n;
        return err;
    }
    if (nowait) {
        return WSAEWOULDBLOCK;
    }
    DWORD n = 0;
    if (!ReadFile(fd, buf, (DWORD)chunk, &n, NULL)) {
        DWORD err = GetLastError();
        if (pipe_ended(err)) {
            *got = 0;
            return 0;
        }
        return (int)err;
    }
    *got = (size_t)n;
    return 0;
}

int
cmp_io_max_pieces(void)
{
    return 64;
}

/* Small pieces are gathered into one buffer so that they go out in one
   WriteFile (one message on a message-mode pipe); a large piece goes out
   by itself, straight from the caller's memory. */
#define GATHER_LIMIT 65536

static int
pipe_writev(HANDLE h, const cmp_iobuf *pieces, int count, size_t *sent)
{
    while (count > 0 && pieces[0].len == 0) {
        pieces++;           /* an empty write would be an empty message, */
        count--;            /* which the reader would take for the end */
    }
    *sent = 0;
    if (count == 0) {
        return 0;
    }
    size_t total = 0;
    int take = 0;
    while (take < count && total + pieces[take].len <= GATHER_LIMIT) {
        total += pieces[take].len;
        take++;
    }
    DWORD n = 0;
    int err;
    if (take >= 2) {
        char small[4096];
        char *buf = total <= sizeof(small) ? small : malloc(total);
        if (buf == NULL) {
            return ERROR_NOT_ENOUGH_MEMORY;
        }
        size_t at = 0;
        for (int i = 0; i < take; i++) {
            memcpy(buf + at, pieces[i].base, pieces[i].len);
            at += pieces[i].len;
        }
        err = pipe_transfer(h, 1, buf, (DWORD)total, &n);
        if (buf != small) {
            free(buf);
        }
    }
    else {
        size_t len = pieces[0].len;
        DWORD want = len > (size_t)INT_MAX ? (DWORD)INT_MAX : (DWORD)len;
        err = pipe_transfer(h, 1, (void *)pieces[0].base, want, &n);
    }
    if (err == CMP_IO_INTERRUPTED && n > 0) {
        err = 0;            /* part went out before Ctrl-C: report it */
    }
    *sent = (size_t)n;
    return err;
}

int
cmp_io_writev(cmp_handle_t fd, int kind, const cmp_iobuf *pieces, int count,
              int nowait, size_t *sent)
{
    if (nowait) {
        /* No per-call non-blocking send: the caller sends blocking. */
        return WSAEWOULDBLOCK;
    }
    if (count > 64) {
        count = 64;
    }
    if (kind == CMP_IO_KIND_SOCKET) {
        WSABUF bufs[64];
        for (int i = 0; i < count; i++) {
            size_t len = pieces[i].len;
            bufs[i].buf = (char *)pieces[i].base;
            bufs[i].len = len > (size_t)INT_MAX ? (ULONG)INT_MAX : (ULONG)len;
        }
        DWORD n = 0;
        if (WSASend(as_socket(fd), bufs, (DWORD)count, &n, 0, NULL, NULL) !=
            0) {
            return WSAGetLastError();
        }
        *sent = (size_t)n;
        return 0;
    }
    if (kind == CMP_IO_KIND_PIPE) {
        return pipe_writev(fd, pieces, count, sent);
    }
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        size_t len = pieces[i].len;
        DWORD want = len > (size_t)INT_MAX ? (DWORD)INT_MAX : (DWORD)len;
        DWORD n = 0;
        if (!WriteFile(fd, pieces[i].base, want, &n, NULL)) {
            if (total > 0) {
                break;      /* report what went out; the error comes next */
            }
            return (int)GetLastError();
        }
        total += n;
        if (n < want) {
            break;
        }
    }
    *sent = total;
    return 0;
}

/* Is one handle readable right now?  Sockets by WSAPoll, pipes by their
   pending bytes (or end of file), anything else by its signalled state
   (process handles, events). */
static int
ready_now(cmp_handle_t h, int *ready)
{
    if (is_socket(h)) {
        WSAPOLLFD p;
        p.fd = as_socket(h);
        p.events = POLLRDNORM;
        p.revents = 0;
        int r = WSAPoll(&p, 1, 0);
        if (r == SOCKET_ERROR) {
            return WSAGetLastError();
        }
        *ready = r > 0;
        return 0;
    }
    if (GetFileType(h) == FILE_TYPE_PIPE) {
        DWORD n = 0;
        if (!PeekNamedPipe(h, NULL, 0, NULL, &n, NULL)) {
            DWORD err = GetLastError();
            if (!pipe_ended(err)) {
                return (int)err;
            }
            n = 1;          /* end of file counts as readable */
        }
        *ready = n > 0;
        return 0;
    }
    DWORD w = WaitForSingleObject(h, 0);
    if (w == WAIT_FAILED) {
        return (int)GetLastError();
    }
    *ready = w == WAIT_OBJECT_0 || w == WAIT_ABANDONED;
    return 0;
}

/* Readiness of every handle now: ready[i], and how many (*nready). */
static int
scan_ready(const cmp_handle_t *handles, size_t count, unsigned char *ready,
           size_t *nready)
{
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        int one = 0;
        int err = ready_now(handles[i], &one);
        if (err != 0) {
            return err;
        }
        ready[i] = (unsigned char)one;
        n += (size_t)one;
    }
    *nready = n;
    return 0;
}

/* The wait of cmp_io_wait_many as one WaitForMultipleObjects, when every
   handle has something to wait on: a process or event handle itself, an
   overlapped pipe a zero-byte overlapped read (which completes when data
   comes -- without taking it, in byte and in message mode -- or the
   writer goes), plus the Ctrl-C event.  Sockets and synchronous pipes
   have nothing of the kind: *handled = 0 then, and the caller polls. */
static int
wait_by_events(const cmp_handle_t *handles, size_t count, DWORD ms,
               unsigned char *ready, size_t *nready, int *handled)
{
    HANDLE events[MAXIMUM_WAIT_OBJECTS];
    OVERLAPPED ov[MAXIMUM_WAIT_OBJECTS];
    unsigned char pending[MAXIMUM_WAIT_OBJECTS];
    char dummy[1];
    size_t k = 0;
    int early = 0, err = 0;

    *handled = 0;
    for (size_t i = 0; i < count; i++) {
        if (is_socket(handles[i]) ||
            (GetFileType(handles[i]) == FILE_TYPE_PIPE &&
             !cmp_io_is_overlapped(handles[i]))) {
            return 0;
        }
    }
    *handled = 1;
    err = scan_ready(handles, count, ready, nready);
    if (err != 0 || *nready > 0) {
        return err;
    }
    memset(pending, 0, sizeof(pending));
    for (size_t i = 0; i < count && !early; i++) {
        if (GetFileType(handles[i]) != FILE_TYPE_PIPE) {
            events[k++] = handles[i];
            continue;
        }
        memset(&ov[i], 0, sizeof(ov[i]));
        ov[i].hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
        if (ov[i].hEvent == NULL) {
            err = (int)GetLastError();
            break;
        }
        if (ReadFile(handles[i], dummy, 0, NULL, &ov[i]) ||
            GetLastError() != ERROR_IO_PENDING) {
            /* data, end of file or an error already: the scan below
               tells which (the read of zero bytes took nothing) */
            CloseHandle(ov[i].hEvent);
            early = 1;
            break;
        }
        pending[i] = 1;
        events[k++] = ov[i].hEvent;
    }
    HANDLE interrupt = cmp_io_interrupt_event();
    int interrupted = 0;
    if (err == 0 && !early) {
        if (interrupt != NULL) {
            events[k++] = interrupt;
        }
        ULONGLONG start = GetTickCount64();
        for (;;) {
            DWORD left = ms;
            if (ms != INFINITE) {
                ULONGLONG spent = GetTickCount64() - start;
                left = spent >= ms ? 0 : ms - (DWORD)spent;
            }
            DWORD w = WaitForMultipleObjects((DWORD)k, events, FALSE, left);
            if (w == WAIT_FAILED) {
                err = (int)GetLastError();
            }
            else if (interrupt != NULL && w == WAIT_OBJECT_0 + k - 1) {
                interrupted = cmp_io_interrupt_pending();
                if (!interrupted) {
                    continue;   /* a stale Ctrl-C, now reset: wait on */
                }
            }
            break;
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (pending[i]) {
            DWORD n = 0;
            CancelIoEx(handles[i], &ov[i]);
            (void)GetOverlappedResult(handles[i], &ov[i], &n, TRUE);
            CloseHandle(ov[i].hEvent);
        }
    }
    if (err != 0) {
        return err;
    }
    err = scan_ready(handles, count, ready, nready);
    if (err == 0 && *nready == 0 && interrupted) {
        return CMP_IO_INTERRUPTED;
    }
    return err;
}

int
cmp_io_wait_many(const cmp_handle_t *handles, size_t count, double timeout,
                 unsigned char *ready, size_t *nready)
{
    int all_sockets = count > 0;
    for (size_t i = 0; i < count && all_sockets; i++) {
        all_sockets = is_socket(handles[i]);
    }
    if (all_sockets) {
        WSAPOLLFD small[16];
        WSAPOLLFD *p = count > 16 ? malloc(count * sizeof(*p)) : small;
        if (p == NULL) {
            return ERROR_NOT_ENOUGH_MEMORY;
        }
        for (size_t i = 0; i < count; i++) {
            p[i].fd = as_socket(handles[i]);
            p[i].events = POLLRDNORM;
            p[i].revents = 0;
        }
        DWORD ms = cmp_win32_wait_ms(timeout);
        int r = WSAPoll(p, (ULONG)count, ms == INFINITE ? -1 : (INT)ms);
        int err = r == SOCKET_ERROR ? WSAGetLastError() : 0;
        size_t n = 0;
        for (size_t i = 0; err == 0 && i < count; i++) {
            ready[i] = p[i].revents != 0;
            n += ready[i];
        }
        *nready = n;
        if (p != small) {
            free(p);
        }
        return err;
    }
    DWORD limit = cmp_win32_wait_ms(timeout);
    if (limit != 0 && count + 1 <= MAXIMUM_WAIT_OBJECTS) {
        int handled = 0;
        int err = wait_by_events(handles, count, limit, ready, nready,
                                 &handled);
        if (handled) {
            return err;
        }
    }
    ULONGLONG start = GetTickCount64();
    for (;;) {
        int err = scan_ready(handles, count, ready, nready);
        if (err != 0) {
            return err;
        }
        if (*nready > 0 || (limit != INFINITE &&
                      GetTickCount64() - start >= (ULONGLONG)limit)) {
            return 0;
        }
        /* a millisecond's pause that Ctrl-C cuts short */
        HANDLE ev = cmp_io_interrupt_event();
        if (ev == NULL) {
            Sleep(1);
        }
        else if (WaitForSingleObject(ev, 1) == WAIT_OBJECT_0 &&
                 cmp_io_interrupt_pending()) {
            return CMP_IO_INTERRUPTED;
        }
    }
}

int
cmp_io_wait_readable(cmp_handle_t fd, double timeout, int *ready)
{
    unsigned char one = 0;
    size_t n = 0;
    int err = cmp_io_wait_many(&fd, 1, timeout, &one, &n);
    if (err == 0) {
        *ready = one != 0;
    }
    return err;
}

int
cmp_io_close(cmp_handle_t fd)
{
    if (is_socket(fd)) {
        return closesocket(as_socket(fd)) == 0 ? 0 : WSAGetLastError();
    }
    return CloseHandle(fd) ? 0 : (int)GetLastError();
}

uint64_t
cmp_io_physical_memory(void)
{
    MEMORYSTATUSEX st;
    st.dwLength = sizeof(st);
    if (!GlobalMemoryStatusEx(&st)) {
        return 0;
    }
    return (uint64_t)st.ullTotalPhys;
}

#endif /* CMP_WINDOWS */
