/* platform/posix_queue.c -- POSIX implementation of platform/queue.h.
 *
 * Linux (5.x and later) honours RWF_NOWAIT on pipes, which gives a read or
 * a write that cannot block on a descriptor whose shared flags stay
 * blocking.  Where the kernel or the C library lacks it (older Linux, macOS)
 * the calls check readiness with poll(2) first and then move no more than
 * PIPE_BUF bytes, an amount a writable pipe always takes at once.  (Build
 * with -DCMP_QPIPE_NO_NOWAIT_FLAG to exercise that fallback on Linux.)
 */
#include "platform/queue.h"

#ifdef CMP_POSIX
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef PIPE_BUF
#  define PIPE_BUF 512
#endif

/* 1 while RWF_NOWAIT is believed to work on pipes here; cleared the first
   time the kernel refuses it.  A plain int: a stale read only costs one
   more refused call. */
#if defined(RWF_NOWAIT) && !defined(CMP_QPIPE_NO_NOWAIT_FLAG)
static volatile int nowait_flag_works = 1;

static int
flag_refused(int err)
{
    return err == EOPNOTSUPP || err == EINVAL || err == ENOSYS;
}
#endif

/* Copy the pieces into an iovec array, at most `cap` bytes in all. */
static int
fill_iov(struct iovec *iov, const cmp_qpipe_piece *pieces, int count,
         size_t cap)
{
    int used = 0;
    for (int i = 0; i < count && i < CMP_QPIPE_MAX_PIECES && cap > 0; i++) {
        size_t len = pieces[i].len < cap ? pieces[i].len : cap;
        if (len == 0) {
            continue;
        }
        iov[used].iov_base = (void *)pieces[i].base;
        iov[used].iov_len = len;
        cap -= len;
        used++;
    }
    return used;
}

static int
poll_ms(double seconds)
{
    if (seconds <= 0.0) {
        return 0;
    }
    double ms = ceil(seconds * 1000.0);
    return ms > (double)INT_MAX ? INT_MAX : (int)ms;
}

static int
ready_now(cmp_handle_t h, short events, int ms)
{
    struct pollfd p;
    p.fd = h;
    p.events = events;
    p.revents = 0;
    int r = poll(&p, 1, ms);
    if (r < 0) {
        return errno == EINTR ? CMP_QPIPE_INTR : errno;
    }
    if (r == 0) {
        return CMP_QPIPE_AGAIN;
    }
    if (p.revents & POLLNVAL) {
        return EBADF;
    }
    return CMP_QPIPE_OK;
}

static size_t
total_len(const cmp_qpipe_piece *pieces, int count)
{
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        total += pieces[i].len;
    }
    return total;
}

/* Skip `n` written bytes: advance *pieces / *count past them.  The caller
   passes a private copy of the array. */
static void
advance(cmp_qpipe_piece *pieces, int *count, size_t n)
{
    int i = 0;
    while (i < *count && n >= pieces[i].len) {
        n -= pieces[i].len;
        i++;
    }
    if (i < *count) {
        pieces[i].base = (const char *)pieces[i].base + n;
        pieces[i].len -= n;
    }
    for (int j = i; j < *count; j++) {
        pieces[j - i] = pieces[j];
    }
    *count -= i;
}

int
cmp_qpipe_write_nowait(cmp_handle_t h, const cmp_qpipe_piece *pieces,
                       int count, size_t *done)
{
    struct iovec iov[CMP_QPIPE_MAX_PIECES];
    *done = 0;
    if (count > CMP_QPIPE_MAX_PIECES) {
        count = CMP_QPIPE_MAX_PIECES;
    }
#if defined(RWF_NOWAIT) && !defined(CMP_QPIPE_NO_NOWAIT_FLAG)
    if (nowait_flag_works) {
        int n = fill_iov(iov, pieces, count, (size_t)SSIZE_MAX);
        ssize_t r = pwritev2(h, iov, n, -1, RWF_NOWAIT);
        if (r >= 0) {
            *done = (size_t)r;
            return CMP_QPIPE_OK;
        }
        int err = errno;
        if (err == EAGAIN) {
            return CMP_QPIPE_OK;
        }
        if (err == EINTR) {
            return CMP_QPIPE_INTR;
        }
        if (!flag_refused(err)) {
            return err;
        }
        nowait_flag_works = 0;
    }
#endif
    /* Fallback: while the pipe reports room, move PIPE_BUF at a time. */
    cmp_qpipe_piece rest[CMP_QPIPE_MAX_PIECES];
    for (int i = 0; i < count; i++) {
        rest[i] = pieces[i];
    }
    int left = count;
    while (total_len(rest, left) > 0) {
        int r = ready_now(h, POLLOUT, 0);
        if (r == CMP_QPIPE_AGAIN) {
            return CMP_QPIPE_OK;
        }
        if (r != CMP_QPIPE_OK) {
            return *done > 0 && r == CMP_QPIPE_INTR ? CMP_QPIPE_OK : r;
        }
        int n = fill_iov(iov, rest, left, PIPE_BUF);
        ssize_t w = writev(h, iov, n);
        if (w < 0) {
            int err = errno;
            if (err == EAGAIN || (err == EINTR && *done > 0)) {
                return CMP_QPIPE_OK;
            }
            return err == EINTR ? CMP_QPIPE_INTR : err;
        }
        *done += (size_t)w;
        advance(rest, &left, (size_t)w);
    }
    return CMP_QPIPE_OK;
}

int
cmp_qpipe_write_wait(cmp_handle_t h, const cmp_qpipe_piece *pieces,
                     int count, size_t *done)
{
    struct iovec iov[CMP_QPIPE_MAX_PIECES];
    if (count > CMP_QPIPE_MAX_PIECES) {
        count = CMP_QPIPE_MAX_PIECES;
    }
    int n = fill_iov(iov, pieces, count, (size_t)SSIZE_MAX);
    ssize_t w = n == 1 ? write(h, iov[0].iov_base, iov[0].iov_len)
                       : writev(h, iov, n);
    if (w < 0) {
        return errno == EINTR ? CMP_QPIPE_INTR : errno;
    }
    *done = (size_t)w;
    return CMP_QPIPE_OK;
}

/* One read into the n pieces of iov that does not block (see
   cmp_qpipe_read_nowait). */
static int
read_iov_nowait(cmp_handle_t h, struct iovec *iov, int n, size_t *done)
{
    ssize_t r;
#if defined(RWF_NOWAIT) && !defined(CMP_QPIPE_NO_NOWAIT_FLAG)
    if (nowait_flag_works) {
        r = preadv2(h, iov, n, -1, RWF_NOWAIT);
        if (r > 0) {
            *done = (size_t)r;
            return CMP_QPIPE_OK;
        }
        if (r == 0) {
            return CMP_QPIPE_EOF;
        }
        int err = errno;
        if (err == EAGAIN) {
            return CMP_QPIPE_AGAIN;
        }
        if (err == EINTR) {
            return CMP_QPIPE_INTR;
        }
        if (!flag_refused(err)) {
            return err;
        }
        nowait_flag_works = 0;
    }
#endif
    /* Fallback: a readable pipe returns what it holds without blocking. */
    int ready = ready_now(h, POLLIN, 0);
    if (ready != CMP_QPIPE_OK) {
        return ready;
    }
    r = n == 1 ? read(h, iov[0].iov_base, iov[0].iov_len) : readv(h, iov, n);
    if (r < 0) {
        return errno == EINTR ? CMP_QPIPE_INTR : errno;
    }
    if (r == 0) {
        return CMP_QPIPE_EOF;
    }
    *done = (size_t)r;
    return CMP_QPIPE_OK;
}

int
cmp_qpipe_read_nowait(cmp_handle_t h, void *buf, size_t len, size_t *done)
{
    struct iovec one;
    *done = 0;
    one.iov_base = buf;
    one.iov_len = len > (size_t)SSIZE_MAX ? (size_t)SSIZE_MAX : len;
    return read_iov_nowait(h, &one, 1, done);
}

int
cmp_qpipe_readv_nowait(cmp_handle_t h, const cmp_qpipe_slot *slots,
                       int count, size_t *done)
{
    struct iovec iov[CMP_QPIPE_MAX_PIECES];
    size_t room = (size_t)SSIZE_MAX;
    int n = 0;
    *done = 0;
    for (int i = 0; i < count && n < CMP_QPIPE_MAX_PIECES && room > 0; i++) {
        size_t len = slots[i].len < room ? slots[i].len : room;
        if (len == 0) {
            continue;
        }
        iov[n].iov_base = slots[i].base;
        iov[n].iov_len = len;
        room -= len;
        n++;
    }
    if (n == 0) {
        return CMP_QPIPE_OK;
    }
    return read_iov_nowait(h, iov, n, done);
}

size_t
cmp_qpipe_grow(cmp_handle_t h, size_t want)
{
#if defined(F_SETPIPE_SZ) && defined(F_GETPIPE_SZ)
    /* Linux: the buffer is the pipe's, shared by both ends and every
       process.  Unprivileged processes may go up to
       /proc/sys/fs/pipe-max-size (1 MiB by default) and not past the
       per-user page budget: on EPERM try half the size, down to what
       the pipe already has. */
    int now = fcntl(h, F_GETPIPE_SZ);
    if (now < 0) {
        return 0;
    }
    if (want > (size_t)INT_MAX) {
        want = (size_t)INT_MAX;
    }
    while (want > (size_t)now) {
        int got = fcntl(h, F_SETPIPE_SZ, (int)want);
        if (got >= 0) {
            return (size_t)got;
        }
        if (errno != EPERM) {
            break;
        }
        want /= 2;
    }
    return (size_t)now;
#else
    /* no way to resize a pipe here (macOS: the kernel grows pipes by
       itself up to 64 KiB) */
    (void)h;
    (void)want;
    return 0;
#endif
}

int
cmp_qpipe_wait(cmp_handle_t h, int for_write, double seconds)
{
    return ready_now(h, for_write ? POLLOUT : POLLIN, poll_ms(seconds));
}

#endif /* CMP_POSIX */
