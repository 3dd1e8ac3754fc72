/* platform/win32_io.c -- Windows implementation of platform/io.h.
 *
 * A connection handle is a SOCKET (AF_INET Listener/Client connections)
 * or a pipe HANDLE: the named pipes of Pipe() and AF_PIPE (win32_npipe.c),
 * opened FILE_FLAG_OVERLAPPED, or an anonymous pipe.  Sockets use Winsock
 * (recv/WSASend/WSAPoll).  Pipes are read and written with an OVERLAPPED
 * structure and its event (which also works on a handle opened for
 * synchronous I/O: the call then completes before it returns); a pending
 * operation is waited for together with the Ctrl-C event, and Ctrl-C
 * cancels it (CancelIoEx) and returns CMP_INTR.  A read that
 * gets part of a message (ERROR_MORE_DATA) returns what it got: the rest
 * comes with the next read.  A broken pipe reads as end of file.
 * Waiting on a mix of sockets and other handles has no single system call:
 * it polls each kind in turn with a short wait on the Ctrl-C event between
 * rounds (WSAPoll alone when all are sockets).
 *
 * The never-blocking transfers on the pipe ends of a queue are the second
 * half of this file.
 */
#include "platform/platform.h"
#include "platform/npipe.h"
#include "platform/win32_internal.h"

#ifdef CMP_WINDOWS
#  include <winsock2.h>
#  include <limits.h>
#  include <math.h>
#  include <stdlib.h>
#  include <string.h>

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

int
cmp_io_kind(cmp_handle_t fd, int *kind)
{
    if (cmp_win32_is_socket(fd)) {
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

/* Bytes waiting in pipe `h` (*avail); *eof when the writers are gone
   (*avail is then 0: a read returns at once). */
static int
pipe_avail(cmp_handle_t h, size_t *avail, int *eof)
{
    DWORD n = 0;
    *avail = 0;
    *eof = 0;
    if (!PeekNamedPipe(h, NULL, 0, NULL, &n, NULL)) {
        DWORD err = GetLastError();
        if (pipe_ended(err)) {
            *eof = 1;
            return 0;
        }
        return (int)err;
    }
    *avail = (size_t)n;
    return 0;
}

/* Bytes waiting on socket `s` (FIONREAD). */
static int
socket_avail(SOCKET s, size_t *avail)
{
    u_long n = 0;
    if (ioctlsocket(s, FIONREAD, &n) != 0) {
        return WSAGetLastError();
    }
    *avail = (size_t)n;
    return 0;
}

/* One ReadFile or WriteFile of at most `len` bytes, with an OVERLAPPED
   structure.  An operation that pends (overlapped handles only) is waited
   for when `wait` (Ctrl-C ends the wait: CMP_INTR), else cancelled at
   once.  *n receives the bytes transferred, also those of an interrupted
   or cancelled operation.  Part of a message (ERROR_MORE_DATA) is a
   success. */
static int
pipe_op(cmp_handle_t h, int writing, void *buf, size_t len, int wait,
        size_t *n)
{
    OVERLAPPED ov;
    DWORD want = len > (size_t)0x7fffffff ? 0x7fffffff : (DWORD)len;
    DWORD got = 0;
    int err = 0;
    *n = 0;
    memset(&ov, 0, sizeof(ov));
    ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov.hEvent == NULL) {
        return (int)GetLastError();
    }
    BOOL ok = writing ? WriteFile(h, buf, want, NULL, &ov)
                      : ReadFile(h, buf, want, NULL, &ov);
    DWORD e = ok ? 0 : GetLastError();
    if (e == ERROR_IO_PENDING && wait) {
        err = cmp_io_overlapped_wait(h, &ov, INFINITE, &got);
    }
    else if (e == ERROR_IO_PENDING) {
        CancelIoEx(h, &ov);
        if (!GetOverlappedResult(h, &ov, &got, TRUE)) {
            err = (int)GetLastError();
            if (err == ERROR_OPERATION_ABORTED) {
                err = 0;
            }
        }
    }
    else if (e == 0 || e == ERROR_MORE_DATA) {
        if (!GetOverlappedResult(h, &ov, &got, FALSE)) {
            err = (int)GetLastError();
        }
    }
    else {
        err = (int)e;
    }
    if (err == ERROR_MORE_DATA) {
        err = 0;
    }
    CloseHandle(ov.hEvent);
    *n = (size_t)got;
    return err;
}

int
cmp_io_pending(cmp_handle_t fd, size_t *avail)
{
    if (cmp_win32_is_socket(fd)) {
        return socket_avail(cmp_win32_as_socket(fd), avail);
    }
    int eof = 0;
    return pipe_avail(fd, avail, &eof);
}

int
cmp_io_read(cmp_handle_t fd, int kind, void *buf, size_t len, int nowait,
            size_t *got)
{
    int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
    if (nowait && (kind == CMP_IO_KIND_SOCKET || kind == CMP_IO_KIND_PIPE)) {
        /* only what is there: a read of that much cannot block */
        size_t avail = 0;
        int eof = 0;
        int err = kind == CMP_IO_KIND_SOCKET
                      ? socket_avail(cmp_win32_as_socket(fd), &avail)
                      : pipe_avail(fd, &avail, &eof);
        if (err != 0) {
            return err;
        }
        if (eof) {
            *got = 0;
            return 0;
        }
        if (avail == 0) {
            return WSAEWOULDBLOCK;
        }
        if (avail < (size_t)chunk) {
            chunk = (int)avail;
        }
    }
    if (kind == CMP_IO_KIND_SOCKET) {
        int r = recv(cmp_win32_as_socket(fd), (char *)buf, chunk,
                     nowait ? 0 : MSG_WAITALL);
        if (r == SOCKET_ERROR) {
            return WSAGetLastError();
        }
        *got = (size_t)r;
        return 0;
    }
    if (kind == CMP_IO_KIND_PIPE) {
        size_t n = 0;
        int err = pipe_op(fd, 0, buf, (size_t)chunk, 1, &n);
        if (pipe_ended((DWORD)err)) {
            *got = 0;
            return 0;
        }
        *got = n;
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
#  define GATHER_LIMIT 65536

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
    size_t n = 0;
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
        err = pipe_op(h, 1, buf, total, 1, &n);
        if (buf != small) {
            free(buf);
        }
    }
    else {
        err = pipe_op(h, 1, (void *)pieces[0].base, pieces[0].len, 1, &n);
    }
    if (err == CMP_INTR && n > 0) {
        err = 0;            /* part went out before Ctrl-C: report it */
    }
    *sent = n;
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
        if (WSASend(cmp_win32_as_socket(fd), bufs, (DWORD)count, &n, 0, NULL,
                    NULL) != 0) {
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
    if (cmp_win32_is_socket(h)) {
        WSAPOLLFD p;
        p.fd = cmp_win32_as_socket(h);
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
        size_t n = 0;
        int eof = 0;
        int err = pipe_avail(h, &n, &eof);
        if (err != 0) {
            return err;
        }
        *ready = n > 0 || eof;  /* end of file counts as readable */
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
        if (cmp_win32_is_socket(handles[i]) ||
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
        return CMP_INTR;
    }
    return err;
}

int
cmp_io_wait_many(const cmp_handle_t *handles, size_t count, double timeout,
                 unsigned char *ready, size_t *nready)
{
    int all_sockets = count > 0;
    for (size_t i = 0; i < count && all_sockets; i++) {
        all_sockets = cmp_win32_is_socket(handles[i]);
    }
    if (all_sockets) {
        WSAPOLLFD small[16];
        WSAPOLLFD *p = count > 16 ? malloc(count * sizeof(*p)) : small;
        if (p == NULL) {
            return ERROR_NOT_ENOUGH_MEMORY;
        }
        for (size_t i = 0; i < count; i++) {
            p[i].fd = cmp_win32_as_socket(handles[i]);
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
            return CMP_INTR;
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
    if (cmp_win32_is_socket(fd)) {
        return closesocket(cmp_win32_as_socket(fd)) == 0 ? 0
                                                         : WSAGetLastError();
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

/* ---- the pipe ends of a queue --------------------------------------------

   A queue's handle is a connected SOCKET or a pipe HANDLE: the named
   pipes of Pipe() (message mode, opened FILE_FLAG_OVERLAPPED), or an
   anonymous pipe (CreatePipe, synchronous).  Every ReadFile/WriteFile gets
   an OVERLAPPED structure, which both kinds accept; on an overlapped
   handle a write that would wait is cancelled at once (CancelIoEx), and
   what went through before is counted.  A synchronous handle cannot be
   asked not to block for one call without changing a mode that every
   process holding the handle shares, so every transfer is sized from what
   the system says fits right now:

    - sockets: select() for readiness, then at most CMP_WQ_SOCK_CHUNK bytes
      per send (a send of that size to a writable socket is buffered at
      once) or whatever recv() finds;
    - pipes: PeekNamedPipe() for the bytes waiting to be read, and the write
      quota of the pipe (NtQueryInformationFile, FilePipeLocalInformation:
      the documented query libuv relies on) for the room left to write.

   Pipes have no readiness event, so waits on them poll with growing naps
   (at most CMP_WQ_NAP_MAX_MS), bounded by the caller's short slices.
   Ctrl-C (the event of win32_npipe.c) ends a blocking write on an
   overlapped pipe and the polling waits with CMP_INTR.

   The helpers below speak in four private outcomes (SH_*), which the
   public functions at the end turn into io.h's convention. */

enum { SH_OK = 0, SH_AGAIN = -1, SH_INTR = -2, SH_EOF = -3 };

/* Largest send to a writable socket that is sure not to block. */
#  define CMP_WQ_SOCK_CHUNK 4096
/* Longest nap between two polls of a pipe (milliseconds). */
#  define CMP_WQ_NAP_MAX_MS 8

/* ---- pipe room: NtQueryInformationFile(FilePipeLocalInformation) ---------- */

typedef struct {
    ULONG NamedPipeType;
    ULONG NamedPipeConfiguration;
    ULONG MaximumInstances;
    ULONG CurrentInstances;
    ULONG InboundQuota;
    ULONG ReadDataAvailable;
    ULONG OutboundQuota;
    ULONG WriteQuotaAvailable;
    ULONG NamedPipeState;
    ULONG NamedPipeEnd;
} cmp_wq_pipe_local_info;

#  define CMP_WQ_FILE_PIPE_LOCAL_INFORMATION 24
#  define CMP_WQ_PIPE_CLOSING_STATE 4

/* Bytes a write to pipe `h` takes now without blocking (*room), and
   whether the reading end is gone (*broken). */
static int
pipe_room(cmp_handle_t h, size_t *room, int *broken)
{
    cmp_wq_pipe_local_info info;
    *room = 0;
    *broken = 0;
    memset(&info, 0, sizeof(info));
    int err = cmp_win32_query_file(h, &info, (unsigned long)sizeof(info),
                                   CMP_WQ_FILE_PIPE_LOCAL_INFORMATION);
    if (err != 0) {
        return err;
    }
    if (info.NamedPipeState == CMP_WQ_PIPE_CLOSING_STATE) {
        *broken = 1;
        return 0;
    }
    *room = (size_t)info.WriteQuotaAvailable;
    return 0;
}

/* One write to pipe `h` that must not block, used when the write quota
   reads 0: a full pipe, or a system that does not report the quota
   (wine).  On an overlapped handle: the write, cancelled if it has to
   wait.  On a synchronous one: the handle is switched to PIPE_NOWAIT for
   the call -- a byte-mode pipe then takes what fits and returns at once
   (TRUE with fewer bytes, possibly none) -- and put back as it was. */
static int
pipe_write_nowait_mode(cmp_handle_t h, const void *base, size_t len,
                       size_t *done)
{
    DWORD state = 0;
    *done = 0;
    if (cmp_io_is_overlapped(h)) {
        return pipe_op(h, 1, (void *)base, len, 0, done);
    }
    if (!GetNamedPipeHandleStateW(h, &state, NULL, NULL, NULL, NULL, 0)) {
        return (int)GetLastError();
    }
    DWORD nowait = state | PIPE_NOWAIT;
    if ((state & PIPE_NOWAIT) == 0 &&
        !SetNamedPipeHandleState(h, &nowait, NULL, NULL)) {
        return (int)GetLastError();
    }
    DWORD wrote = 0;
    DWORD want = len > (size_t)0x7fffffff ? 0x7fffffff : (DWORD)len;
    int err = WriteFile(h, base, want, &wrote, NULL) ? 0 : (int)GetLastError();
    if ((state & PIPE_NOWAIT) == 0) {
        DWORD back = state;
        (void)SetNamedPipeHandleState(h, &back, NULL, NULL);
    }
    *done = (size_t)wrote;
    return err;
}

/* ---- sockets ----------------------------------------------------------- */

/* Wait at most `ms` (< 0: forever) for socket `s` to be readable or
   writable: SH_OK, SH_AGAIN or a Winsock error. */
static int
socket_ready(SOCKET s, int for_write, long ms)
{
    fd_set set, errs;
    struct timeval tv;
    FD_ZERO(&set);
    FD_ZERO(&errs);
    FD_SET(s, &set);
    FD_SET(s, &errs);
    if (ms >= 0) {
        tv.tv_sec = ms / 1000;
        tv.tv_usec = (ms % 1000) * 1000;
    }
    int r = select(0, for_write ? NULL : &set, for_write ? &set : NULL, &errs,
                   ms >= 0 ? &tv : NULL);
    if (r == SOCKET_ERROR) {
        return WSAGetLastError();
    }
    return r > 0 ? SH_OK : SH_AGAIN;
}

static long
to_ms(double seconds)
{
    if (seconds <= 0.0) {
        return 0;
    }
    double ms = ceil(seconds * 1000.0);
    return ms > (double)LONG_MAX ? LONG_MAX : (long)ms;
}

/* Fill `bufs` from the pieces, at most `cap` bytes in all; returns how
   many buffers were used. */
static DWORD
gather(WSABUF *bufs, const cmp_iobuf *pieces, int count, size_t cap)
{
    DWORD used = 0;
    for (int i = 0; i < count && i < CMP_IO_MAX_PIECES && cap > 0; i++) {
        size_t len = pieces[i].len < cap ? pieces[i].len : cap;
        if (len == 0) {
            continue;
        }
        if (len > (size_t)ULONG_MAX) {
            len = (size_t)ULONG_MAX;
        }
        bufs[used].buf = (char *)pieces[i].base;
        bufs[used].len = (ULONG)len;
        cap -= len;
        used++;
    }
    return used;
}

static int
socket_send(SOCKET s, const cmp_iobuf *pieces, int count, size_t cap,
            size_t *done)
{
    WSABUF bufs[CMP_IO_MAX_PIECES];
    DWORD n = gather(bufs, pieces, count, cap);
    DWORD sent = 0;
    *done = 0;
    if (n == 0) {
        return SH_OK;
    }
    if (WSASend(s, bufs, n, &sent, 0, NULL, NULL) == SOCKET_ERROR) {
        int err = WSAGetLastError();
        return err == WSAEWOULDBLOCK ? SH_OK : err;
    }
    *done = (size_t)sent;
    return SH_OK;
}

/* ---- the layer -------------------------------------------------------- */

/* The first non-empty piece, for pipes (WriteFile takes one buffer). */
static int
first_piece(const cmp_iobuf *pieces, int count)
{
    for (int i = 0; i < count && i < CMP_IO_MAX_PIECES; i++) {
        if (pieces[i].len > 0) {
            return i;
        }
    }
    return -1;
}

static int
pipe_write(cmp_handle_t h, const void *base, size_t len, size_t *done)
{
    int err = pipe_op(h, 1, (void *)base, len, 1, done);
    if (err == CMP_INTR) {
        err = *done > 0 ? 0 : SH_INTR;  /* what went through counts */
    }
    return err;
}

static int
sh_write_nowait(cmp_handle_t h, const cmp_iobuf *pieces, int count,
                size_t *done)
{
    *done = 0;
    if (count > CMP_IO_MAX_PIECES) {
        count = CMP_IO_MAX_PIECES;
    }
    if (cmp_win32_is_socket(h)) {
        /* chunk by chunk while the socket says it has room */
        cmp_iobuf rest[CMP_IO_MAX_PIECES];
        int left = 0;
        for (int i = 0; i < count; i++) {
            if (pieces[i].len > 0) {
                rest[left++] = pieces[i];
            }
        }
        while (left > 0) {
            int r = socket_ready(cmp_win32_as_socket(h), 1, 0);
            if (r == SH_AGAIN) {
                return SH_OK;
            }
            if (r != SH_OK) {
                return r;
            }
            size_t n = 0;
            r = socket_send(cmp_win32_as_socket(h), rest, left,
                            CMP_WQ_SOCK_CHUNK, &n);
            if (r != SH_OK) {
                return *done > 0 ? SH_OK : r;
            }
            if (n == 0) {
                return SH_OK;
            }
            *done += n;
            /* drop what went out */
            int i = 0;
            while (i < left && n >= rest[i].len) {
                n -= rest[i].len;
                i++;
            }
            if (i < left) {
                rest[i].base = (const char *)rest[i].base + n;
                rest[i].len -= n;
            }
            for (int j = i; j < left; j++) {
                rest[j - i] = rest[j];
            }
            left -= i;
        }
        return SH_OK;
    }
    /* a pipe: write as much as its quota says fits, piece by piece */
    for (int i = 0; i < count; i++) {
        size_t room = 0, n = 0;
        int broken = 0;
        if (pieces[i].len == 0) {
            continue;
        }
        int err = pipe_room(h, &room, &broken);
        if (err) {
            return *done > 0 ? SH_OK : err;
        }
        if (broken) {
            return *done > 0 ? SH_OK : ERROR_NO_DATA;
        }
        if (room == 0) {
            err = pipe_write_nowait_mode(h, pieces[i].base, pieces[i].len, &n);
        }
        else {
            size_t want = pieces[i].len < room ? pieces[i].len : room;
            err = pipe_write(h, pieces[i].base, want, &n);
        }
        if (err) {
            return *done > 0 ? SH_OK : err;
        }
        *done += n;
        if (n < pieces[i].len) {
            return SH_OK;
        }
    }
    return SH_OK;
}

static int
sh_write_wait(cmp_handle_t h, const cmp_iobuf *pieces, int count, size_t *done)
{
    *done = 0;
    if (count > CMP_IO_MAX_PIECES) {
        count = CMP_IO_MAX_PIECES;
    }
    if (cmp_win32_is_socket(h)) {
        return socket_send(cmp_win32_as_socket(h), pieces, count, (size_t)-1,
                           done);
    }
    int i = first_piece(pieces, count);
    if (i < 0) {
        return SH_OK;
    }
    return pipe_write(h, pieces[i].base, pieces[i].len, done);
}

static int
sh_read_nowait(cmp_handle_t h, void *buf, size_t len, size_t *done)
{
    *done = 0;
    if (len > (size_t)INT_MAX) {
        len = (size_t)INT_MAX;
    }
    if (cmp_win32_is_socket(h)) {
        int r = socket_ready(cmp_win32_as_socket(h), 0, 0);
        if (r != SH_OK) {
            return r;
        }
        int got = recv(cmp_win32_as_socket(h), (char *)buf, (int)len, 0);
        if (got == SOCKET_ERROR) {
            int err = WSAGetLastError();
            if (err == WSAEWOULDBLOCK) {
                return SH_AGAIN;
            }
            /* a peer that went away is an end of file, as on a pipe */
            return (err == WSAECONNRESET || err == WSAECONNABORTED) ? SH_EOF
                                                                    : err;
        }
        if (got == 0) {
            return SH_EOF;
        }
        *done = (size_t)got;
        return SH_OK;
    }
    size_t avail = 0;
    int eof = 0;
    int err = pipe_avail(h, &avail, &eof);
    if (err) {
        return err;
    }
    if (eof) {
        return SH_EOF;
    }
    if (avail == 0) {
        return SH_AGAIN;
    }
    size_t got = 0;
    /* (no more than is there: the read cannot wait; a message-mode pipe
       hands over part of a message) */
    err = pipe_op(h, 0, buf, avail < len ? avail : len, 0, &got);
    if (pipe_ended((DWORD)err)) {
        return SH_EOF;
    }
    if (err) {
        return err;
    }
    if (got == 0) {
        return SH_AGAIN;
    }
    *done = (size_t)got;
    return SH_OK;
}

/* One check of a pipe: SH_OK when ready (or at end / broken),
   SH_AGAIN when not yet. */
static int
pipe_ready(cmp_handle_t h, int for_write)
{
    size_t n = 0;
    int flag = 0;
    int err = for_write ? pipe_room(h, &n, &flag) : pipe_avail(h, &n, &flag);
    if (err) {
        /* a write end that cannot be queried: report it ready, and let
           the write itself tell */
        return (for_write && err == ERROR_NOT_SUPPORTED) ? SH_OK : err;
    }
    return (flag || n > 0) ? SH_OK : SH_AGAIN;
}

static int
sh_wait(cmp_handle_t h, int for_write, double seconds)
{
    if (cmp_win32_is_socket(h)) {
        return socket_ready(cmp_win32_as_socket(h), for_write, to_ms(seconds));
    }
    ULONGLONG start = GetTickCount64();
    ULONGLONG limit = (ULONGLONG)to_ms(seconds);
    DWORD nap = 1;
    for (;;) {
        int r = pipe_ready(h, for_write);
        if (r != SH_AGAIN) {
            return r;
        }
        ULONGLONG spent = GetTickCount64() - start;
        if (spent >= limit) {
            return SH_AGAIN;
        }
        DWORD left = (DWORD)(limit - spent);
        HANDLE ev = cmp_io_interrupt_event();
        if (ev == NULL) {
            Sleep(nap < left ? nap : left);
        }
        else if (WaitForSingleObject(ev, nap < left ? nap : left) ==
                     WAIT_OBJECT_0 &&
                 cmp_io_interrupt_pending()) {
            return SH_INTR;
        }
        if (nap < CMP_WQ_NAP_MAX_MS) {
            nap *= 2;
        }
    }
}

/* io.h's result for a private outcome (SH_EOF is handled by the caller). */
static int
sh_result(int r)
{
    if (r == SH_AGAIN) {
        return CMP_BUSY;
    }
    if (r == SH_INTR) {
        return CMP_INTR;
    }
    return r;
}

int
cmp_io_shared_writev(cmp_handle_t h, const cmp_iobuf *pieces, int count,
                     int nowait, size_t *sent)
{
    int r = nowait ? sh_write_nowait(h, pieces, count, sent)
                   : sh_write_wait(h, pieces, count, sent);
    if (r == SH_OK && nowait && *sent == 0) {
        return CMP_BUSY;
    }
    return sh_result(r);
}

/* No scattered read here: the slots are read one call each. */
int
cmp_io_shared_readv(cmp_handle_t h, const cmp_iobuf *slots, int count,
                    size_t *got)
{
    *got = 0;
    for (int i = 0; i < count; i++) {
        size_t n = 0;
        if (slots[i].len == 0) {
            continue;
        }
        int r = sh_read_nowait(h, (void *)slots[i].base, slots[i].len, &n);
        if (r != SH_OK) {
            return (*got > 0 || r == SH_EOF) ? 0 : sh_result(r);
        }
        *got += n;
        if (n < slots[i].len) {
            break;
        }
    }
    return 0;
}

int
cmp_io_shared_wait(cmp_handle_t h, int for_write, double seconds, int *ready)
{
    int r = sh_wait(h, for_write, seconds);
    *ready = r == SH_OK;
    return (r == SH_OK || r == SH_AGAIN) ? 0 : sh_result(r);
}

/* No resizable pipe buffer here (yet): the size stays as it is. */
size_t
cmp_io_pipe_grow(cmp_handle_t h, size_t want)
{
    (void)h;
    (void)want;
    return 0;
}

#endif /* CMP_WINDOWS */
