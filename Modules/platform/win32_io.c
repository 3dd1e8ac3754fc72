/* platform/win32_io.c -- Windows implementation of platform/io.h.
 *
 * A connection handle is a SOCKET (Pipe() and Listener/Client connections
 * are sockets there) or a byte-mode pipe HANDLE.  Sockets use Winsock
 * (recv/WSASend/WSAPoll); pipes use ReadFile/WriteFile and PeekNamedPipe.
 * Windows has no signals that interrupt these calls, so nothing here
 * returns CMP_IO_INTERRUPTED.  Waiting on a mix of sockets and other
 * handles has no single system call: it polls each kind in turn with a
 * short sleep between rounds (WSAPoll alone when all are sockets).
 */
#include "platform/platform.h"

#ifdef CMP_WINDOWS
#include <winsock2.h>
#include <math.h>
#include <stdlib.h>

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
    if (GetFileType(fd) == FILE_TYPE_UNKNOWN && GetLastError() != NO_ERROR) {
        return (int)GetLastError();
    }
    *kind = CMP_IO_KIND_OTHER;
    return 0;
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
        if (err == ERROR_BROKEN_PIPE) {
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
    if (nowait) {
        return WSAEWOULDBLOCK;
    }
    DWORD n = 0;
    if (!ReadFile(fd, buf, (DWORD)chunk, &n, NULL)) {
        DWORD err = GetLastError();
        if (err == ERROR_BROKEN_PIPE) {
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
            if (err != ERROR_BROKEN_PIPE) {
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

static DWORD
timeout_ms(double timeout)
{
    if (timeout < 0.0) {
        return INFINITE;
    }
    double ms = ceil(timeout * 1000.0);
    return ms >= (double)INFINITE ? INFINITE - 1 : (DWORD)ms;
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
        DWORD ms = timeout_ms(timeout);
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
    ULONGLONG start = GetTickCount64();
    DWORD limit = timeout_ms(timeout);
    for (;;) {
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
        if (n > 0 || (limit != INFINITE &&
                      GetTickCount64() - start >= (ULONGLONG)limit)) {
            return 0;
        }
        Sleep(1);
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
