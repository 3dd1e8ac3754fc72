/* platform/win32_queue.c -- Windows implementation of platform/queue.h.
 *
 * A queue's handle is a connected SOCKET or a pipe HANDLE: the named
 * pipes of Pipe() (message mode, opened FILE_FLAG_OVERLAPPED), or an
 * anonymous pipe (CreatePipe, synchronous).  Every ReadFile/WriteFile gets
 * an OVERLAPPED structure, which both kinds accept; on an overlapped
 * handle a write that would wait is cancelled at once (CancelIoEx), and
 * what went through before is counted.  A synchronous handle cannot be
 * asked not to block for one call without changing a mode that every
 * process holding the handle shares, so every transfer is sized from what
 * the system says fits right now:
 *
 *  - sockets: select() for readiness, then at most CMP_WQ_SOCK_CHUNK bytes
 *    per send (a send of that size to a writable socket is buffered at
 *    once) or whatever recv() finds;
 *  - pipes: PeekNamedPipe() for the bytes waiting to be read, and the write
 *    quota of the pipe (NtQueryInformationFile, FilePipeLocalInformation:
 *    the documented query libuv relies on) for the room left to write.
 *
 * Pipes have no readiness event, so waits on them poll with growing naps
 * (at most CMP_WQ_NAP_MAX_MS), bounded by the caller's short slices.
 * Ctrl-C (the event of win32_npipe.c) ends a blocking write on an
 * overlapped pipe and the polling waits with CMP_QPIPE_INTR.
 */
#include "platform/queue.h"
#include "platform/npipe.h"

#ifdef CMP_WINDOWS
#include <winsock2.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* Largest send to a writable socket that is sure not to block. */
#define CMP_WQ_SOCK_CHUNK 4096
/* Longest nap between two polls of a pipe (milliseconds). */
#define CMP_WQ_NAP_MAX_MS 8

/* ---- handle kinds -------------------------------------------------------- */

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

#define CMP_WQ_FILE_PIPE_LOCAL_INFORMATION 24
#define CMP_WQ_PIPE_CLOSING_STATE 4

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

/* One ReadFile or WriteFile of at most `len` bytes, with an OVERLAPPED
   structure.  An operation that pends (overlapped handles only) is waited
   for when `wait` (Ctrl-C ends the wait: CMP_QPIPE_INTR if nothing went
   through), else cancelled at once.  *n receives the bytes transferred,
   also those of a cancelled operation.  Part of a message
   (ERROR_MORE_DATA) is a success. */
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
        if (err == CMP_IO_INTERRUPTED) {
            err = got > 0 ? 0 : CMP_QPIPE_INTR;
        }
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

/* Bytes waiting in pipe `h` (*avail); *eof when the writers are gone. */
static int
pipe_avail(cmp_handle_t h, size_t *avail, int *eof)
{
    DWORD n = 0;
    *avail = 0;
    *eof = 0;
    if (!PeekNamedPipe(h, NULL, 0, NULL, &n, NULL)) {
        DWORD err = GetLastError();
        if (err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED) {
            *eof = 1;
            return 0;
        }
        return (int)err;
    }
    *avail = (size_t)n;
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
   writable: CMP_QPIPE_OK, CMP_QPIPE_AGAIN or a Winsock error. */
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
    int r = select(0, for_write ? NULL : &set, for_write ? &set : NULL,
                   &errs, ms >= 0 ? &tv : NULL);
    if (r == SOCKET_ERROR) {
        return WSAGetLastError();
    }
    return r > 0 ? CMP_QPIPE_OK : CMP_QPIPE_AGAIN;
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
gather(WSABUF *bufs, const cmp_qpipe_piece *pieces, int count, size_t cap)
{
    DWORD used = 0;
    for (int i = 0; i < count && i < CMP_QPIPE_MAX_PIECES && cap > 0; i++) {
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
socket_send(SOCKET s, const cmp_qpipe_piece *pieces, int count, size_t cap,
            size_t *done)
{
    WSABUF bufs[CMP_QPIPE_MAX_PIECES];
    DWORD n = gather(bufs, pieces, count, cap);
    DWORD sent = 0;
    *done = 0;
    if (n == 0) {
        return CMP_QPIPE_OK;
    }
    if (WSASend(s, bufs, n, &sent, 0, NULL, NULL) == SOCKET_ERROR) {
        int err = WSAGetLastError();
        return err == WSAEWOULDBLOCK ? CMP_QPIPE_OK : err;
    }
    *done = (size_t)sent;
    return CMP_QPIPE_OK;
}

/* ---- the layer -------------------------------------------------------- */

/* The first non-empty piece, for pipes (WriteFile takes one buffer). */
static int
first_piece(const cmp_qpipe_piece *pieces, int count)
{
    for (int i = 0; i < count && i < CMP_QPIPE_MAX_PIECES; i++) {
        if (pieces[i].len > 0) {
            return i;
        }
    }
    return -1;
}

static int
pipe_write(cmp_handle_t h, const void *base, size_t len, size_t *done)
{
    return pipe_op(h, 1, (void *)base, len, 1, done);
}

int
cmp_qpipe_write_nowait(cmp_handle_t h, const cmp_qpipe_piece *pieces,
                       int count, size_t *done)
{
    *done = 0;
    if (count > CMP_QPIPE_MAX_PIECES) {
        count = CMP_QPIPE_MAX_PIECES;
    }
    if (is_socket(h)) {
        /* chunk by chunk while the socket says it has room */
        cmp_qpipe_piece rest[CMP_QPIPE_MAX_PIECES];
        int left = 0;
        for (int i = 0; i < count; i++) {
            if (pieces[i].len > 0) {
                rest[left++] = pieces[i];
            }
        }
        while (left > 0) {
            int r = socket_ready(as_socket(h), 1, 0);
            if (r == CMP_QPIPE_AGAIN) {
                return CMP_QPIPE_OK;
            }
            if (r != CMP_QPIPE_OK) {
                return r;
            }
            size_t n = 0;
            r = socket_send(as_socket(h), rest, left, CMP_WQ_SOCK_CHUNK, &n);
            if (r != CMP_QPIPE_OK) {
                return *done > 0 ? CMP_QPIPE_OK : r;
            }
            if (n == 0) {
                return CMP_QPIPE_OK;
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
        return CMP_QPIPE_OK;
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
            return *done > 0 ? CMP_QPIPE_OK : err;
        }
        if (broken) {
            return *done > 0 ? CMP_QPIPE_OK : ERROR_NO_DATA;
        }
        if (room == 0) {
            err = pipe_write_nowait_mode(h, pieces[i].base, pieces[i].len,
                                         &n);
        }
        else {
            size_t want = pieces[i].len < room ? pieces[i].len : room;
            err = pipe_write(h, pieces[i].base, want, &n);
        }
        if (err) {
            return *done > 0 ? CMP_QPIPE_OK : err;
        }
        *done += n;
        if (n < pieces[i].len) {
            return CMP_QPIPE_OK;
        }
    }
    return CMP_QPIPE_OK;
}

int
cmp_qpipe_write_wait(cmp_handle_t h, const cmp_qpipe_piece *pieces,
                     int count, size_t *done)
{
    *done = 0;
    if (count > CMP_QPIPE_MAX_PIECES) {
        count = CMP_QPIPE_MAX_PIECES;
    }
    if (is_socket(h)) {
        return socket_send(as_socket(h), pieces, count, (size_t)-1, done);
    }
    int i = first_piece(pieces, count);
    if (i < 0) {
        return CMP_QPIPE_OK;
    }
    return pipe_write(h, pieces[i].base, pieces[i].len, done);
}

int
cmp_qpipe_read_nowait(cmp_handle_t h, void *buf, size_t len, size_t *done)
{
    *done = 0;
    if (len > (size_t)INT_MAX) {
        len = (size_t)INT_MAX;
    }
    if (is_socket(h)) {
        int r = socket_ready(as_socket(h), 0, 0);
        if (r != CMP_QPIPE_OK) {
            return r;
        }
        int got = recv(as_socket(h), (char *)buf, (int)len, 0);
        if (got == SOCKET_ERROR) {
            int err = WSAGetLastError();
            if (err == WSAEWOULDBLOCK) {
                return CMP_QPIPE_AGAIN;
            }
            /* a peer that went away is an end of file, as on a pipe */
            return (err == WSAECONNRESET || err == WSAECONNABORTED)
                       ? CMP_QPIPE_EOF
                       : err;
        }
        if (got == 0) {
            return CMP_QPIPE_EOF;
        }
        *done = (size_t)got;
        return CMP_QPIPE_OK;
    }
    size_t avail = 0;
    int eof = 0;
    int err = pipe_avail(h, &avail, &eof);
    if (err) {
        return err;
    }
    if (eof) {
        return CMP_QPIPE_EOF;
    }
    if (avail == 0) {
        return CMP_QPIPE_AGAIN;
    }
    size_t got = 0;
    /* (no more than is there: the read cannot wait; a message-mode pipe
       hands over part of a message) */
    err = pipe_op(h, 0, buf, avail < len ? avail : len, 0, &got);
    if (err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED) {
        return CMP_QPIPE_EOF;
    }
    if (err) {
        return err;
    }
    if (got == 0) {
        return CMP_QPIPE_AGAIN;
    }
    *done = (size_t)got;
    return CMP_QPIPE_OK;
}

/* One check of a pipe: CMP_QPIPE_OK when ready (or at end / broken),
   CMP_QPIPE_AGAIN when not yet. */
static int
pipe_ready(cmp_handle_t h, int for_write)
{
    size_t n = 0;
    int flag = 0;
    int err = for_write ? pipe_room(h, &n, &flag) : pipe_avail(h, &n, &flag);
    if (err) {
        /* a write end that cannot be queried: report it ready, and let
           the write itself tell */
        return (for_write && err == ERROR_NOT_SUPPORTED) ? CMP_QPIPE_OK
                                                          : err;
    }
    return (flag || n > 0) ? CMP_QPIPE_OK : CMP_QPIPE_AGAIN;
}

int
cmp_qpipe_wait(cmp_handle_t h, int for_write, double seconds)
{
    if (is_socket(h)) {
        return socket_ready(as_socket(h), for_write, to_ms(seconds));
    }
    ULONGLONG start = GetTickCount64();
    ULONGLONG limit = (ULONGLONG)to_ms(seconds);
    DWORD nap = 1;
    for (;;) {
        int r = pipe_ready(h, for_write);
        if (r != CMP_QPIPE_AGAIN) {
            return r;
        }
        ULONGLONG spent = GetTickCount64() - start;
        if (spent >= limit) {
            return CMP_QPIPE_AGAIN;
        }
        DWORD left = (DWORD)(limit - spent);
        HANDLE ev = cmp_io_interrupt_event();
        if (ev == NULL) {
            Sleep(nap < left ? nap : left);
        }
        else if (WaitForSingleObject(ev, nap < left ? nap : left) ==
                     WAIT_OBJECT_0 &&
                 cmp_io_interrupt_pending()) {
            return CMP_QPIPE_INTR;
        }
        if (nap < CMP_WQ_NAP_MAX_MS) {
            nap *= 2;
        }
    }
}

#endif /* CMP_WINDOWS */
