/* platform/posix_io.c -- POSIX implementation of platform/io.h: reads and
 * gathered writes on sockets and pipes, the never-blocking transfers on a
 * queue's shared pipe, poll(2) waits, SCM_RIGHTS.
 *
 * Shared pipes: Linux (5.x and later) honours RWF_NOWAIT on pipes, which
 * gives a read or a write that cannot block on a descriptor whose shared
 * flags stay blocking.  Where the kernel or the C library lacks it (older
 * Linux, macOS) the calls check readiness with poll(2) first and then move
 * no more than PIPE_BUF bytes, an amount a writable pipe always takes at
 * once.  (Build with -DCMP_IO_NO_NOWAIT_FLAG to exercise that fallback on
 * Linux.)
 */
#include "platform/platform.h"
#include "platform/darwin.h"

#ifdef CMP_POSIX
#  include <errno.h>
#  include <limits.h>
#  include <math.h>
#  include <poll.h>
#  include <stdlib.h>
#  include <string.h>
#  include <sys/ioctl.h>
#  include <sys/socket.h>
#  include <sys/stat.h>
#  include <sys/uio.h>
#  include <unistd.h>

#  ifndef MSG_NOSIGNAL
#    define MSG_NOSIGNAL 0
#  endif

/* Linux hands received descriptors over already close-on-exec. */
#  ifdef MSG_CMSG_CLOEXEC
#    define CMP_RECV_CLOEXEC MSG_CMSG_CLOEXEC
#  else
#    define CMP_RECV_CLOEXEC 0
#  endif

#  include <fcntl.h>

long long
cmp_io_handle_value(cmp_handle_t h)
{
    return (long long)h;
}

int
cmp_io_handle_from_value(long long value, cmp_handle_t *h)
{
    if (value < 0 || value > INT_MAX) {
        return EBADF;
    }
    *h = (cmp_handle_t)value;
    return 0;
}

int
cmp_io_kind(cmp_handle_t fd, int *kind)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return errno;
    }
    *kind = S_ISSOCK(st.st_mode) ? CMP_IO_KIND_SOCKET : CMP_IO_KIND_OTHER;
#  ifdef CMP_DARWIN
    (void)cmp_darwin_nosigpipe(fd);     /* EPIPE, not SIGPIPE */
#  endif
    return 0;
}

int
cmp_io_read(cmp_handle_t fd, int kind, void *buf, size_t len, int nowait,
            size_t *got)
{
    ssize_t n;
    if (len > (size_t)SSIZE_MAX) {
        len = (size_t)SSIZE_MAX;
    }
    if (kind == CMP_IO_KIND_SOCKET) {
        /* A blocking read waits for all it asks for: one system call per
           payload instead of one per segment that arrives. */
        n = recv(fd, buf, len, nowait ? MSG_DONTWAIT : MSG_WAITALL);
    }
    else {
        if (nowait) {
            /* A pipe cannot be asked not to block without changing the
               flags it shares with other processes: let the caller check
               with cmp_io_pending() first. */
            return EAGAIN;
        }
        n = read(fd, buf, len);
    }
    if (n < 0) {
        return errno == EWOULDBLOCK ? EAGAIN : errno;
    }
    *got = (size_t)n;
    return 0;
}

int
cmp_io_max_pieces(void)
{
#  ifdef IOV_MAX
    return IOV_MAX < 1024 ? IOV_MAX : 1024;
#  else
    return 16;
#  endif
}

int
cmp_io_writev(cmp_handle_t fd, int kind, const cmp_iobuf *pieces, int count,
              int nowait, size_t *sent)
{
    struct iovec iov[CMP_IO_MAX_PIECES];
    ssize_t n;
    if (count > CMP_IO_MAX_PIECES) {
        count = CMP_IO_MAX_PIECES;
    }
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = (void *)pieces[i].base;
        iov[i].iov_len = pieces[i].len;
    }
    if (kind == CMP_IO_KIND_SOCKET) {
        struct msghdr mh;
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)count;
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | (nowait ? MSG_DONTWAIT : 0));
    }
    else {
        if (nowait) {
            return EAGAIN;
        }
        n = count == 1 ? write(fd, iov[0].iov_base, iov[0].iov_len)
                       : writev(fd, iov, count);
    }
    if (n < 0) {
        return errno == EWOULDBLOCK ? EAGAIN : errno;
    }
    *sent = (size_t)n;
    return 0;
}

int
cmp_io_pending(cmp_handle_t fd, size_t *avail)
{
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) < 0) {
        return errno;
    }
    *avail = n < 0 ? 0 : (size_t)n;
    return 0;
}

/* poll(2) timeout in milliseconds, rounded up so that a short positive
   wait does not turn into a busy loop. */
static int
timeout_ms(double timeout)
{
    if (timeout < 0.0) {
        return -1;
    }
    double ms = ceil(timeout * 1000.0);
    return ms > (double)INT_MAX ? INT_MAX : (int)ms;
}

int
cmp_io_wait_readable(cmp_handle_t fd, double timeout, int *ready)
{
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    int r = poll(&p, 1, timeout_ms(timeout));
    if (r < 0) {
        return errno;
    }
    if (r > 0 && (p.revents & POLLNVAL)) {
        return EBADF;
    }
    *ready = r > 0;
    return 0;
}

int
cmp_io_wait_many(const cmp_handle_t *handles, size_t count, double timeout,
                 unsigned char *ready, size_t *nready)
{
    struct pollfd small[16];
    struct pollfd *p = small;
    if (count > 16) {
        p = malloc(count * sizeof(*p));
        if (p == NULL) {
            return ENOMEM;
        }
    }
    for (size_t i = 0; i < count; i++) {
        p[i].fd = handles[i];
        p[i].events = POLLIN;
        p[i].revents = 0;
    }
    int err = 0;
    int r = poll(p, (nfds_t)count, timeout_ms(timeout));
    if (r < 0) {
        err = errno;
    }
    else {
        size_t n = 0;
        for (size_t i = 0; i < count; i++) {
            ready[i] = p[i].revents != 0;
            n += ready[i];
        }
        *nready = n;
    }
    if (p != small) {
        free(p);
    }
    return err;
}

int
cmp_io_close(cmp_handle_t fd)
{
    if (close(fd) < 0 && errno != EINTR) {
        return errno;
    }
    return 0;
}

uint64_t
cmp_io_physical_memory(void)
{
#  if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES);
    long size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && size > 0) {
        return (uint64_t)pages * (uint64_t)size;
    }
#  endif
    return 0;
}

int
cmp_io_sendfds(cmp_handle_t sock, const int *fds, size_t nfds, const void *msg,
               size_t msglen, size_t *sent)
{
    size_t space = CMSG_SPACE(nfds * sizeof(int));
    char *control = calloc(1, space ? space : 1);
    if (control == NULL) {
        return ENOMEM;
    }
    struct iovec iov = {(void *)msg, msglen};
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds > 0) {
        mh.msg_control = control;
        mh.msg_controllen = space;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
    }
    int err = 0;
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n < 0) {
        err = errno;
    }
    else {
        *sent = (size_t)n;
    }
    free(control);
    return err;
}

int
cmp_io_recvfds(cmp_handle_t sock, int *fds, size_t maxfds, size_t *nfds,
               void *msg, size_t msglen, size_t *got, int *truncated)
{
    size_t space = CMSG_SPACE(maxfds * sizeof(int));
    char *control = calloc(1, space);
    if (control == NULL) {
        return ENOMEM;
    }
    struct iovec iov = {msg, msglen};
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = space;
    ssize_t n = recvmsg(sock, &mh, CMP_RECV_CLOEXEC);
    if (n < 0) {
        int err = errno;
        free(control);
        return err;
    }
    size_t count = 0;
    *truncated = (mh.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL;
         cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t bytes = cm->cmsg_len - CMSG_LEN(0);
        size_t k = bytes / sizeof(int);
        const unsigned char *data = CMSG_DATA(cm);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, data + i * sizeof(int), sizeof(int));
            if (count < maxfds) {
                fds[count++] = fd;
            }
            else {
                (void)close(fd);
                *truncated = 1;
            }
        }
    }
#  if CMP_RECV_CLOEXEC == 0
    for (size_t i = 0; i < count; i++) {
        (void)fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
#  endif
    *nfds = count;
    *got = (size_t)n;
    free(control);
    return 0;
}

/* ---- the pipe ends of a queue ------------------------------------------ */

#  ifndef PIPE_BUF
#    define PIPE_BUF 512
#  endif

/* 1 while RWF_NOWAIT is believed to work on pipes here; cleared the first
   time the kernel refuses it.  A plain int: a stale read only costs one
   more refused call. */
#  if defined(RWF_NOWAIT) && !defined(CMP_IO_NO_NOWAIT_FLAG)
#    define CMP_IO_NOWAIT_FLAG 1
static volatile int nowait_flag_works = 1;

static int
flag_refused(int err)
{
    return err == EOPNOTSUPP || err == EINVAL || err == ENOSYS;
}
#  endif

/* Copy the pieces into an iovec array, at most `cap` bytes in all. */
static int
fill_iov(struct iovec *iov, const cmp_iobuf *pieces, int count, size_t cap)
{
    int used = 0;
    for (int i = 0; i < count && i < CMP_IO_MAX_PIECES && cap > 0; i++) {
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

/* One poll(2) of `h` for `events`: 0 with *ready set, or an errno. */
static int
poll_one(cmp_handle_t h, short events, int ms, int *ready)
{
    struct pollfd p;
    p.fd = h;
    p.events = events;
    p.revents = 0;
    *ready = 0;
    int r = poll(&p, 1, ms);
    if (r < 0) {
        return errno;
    }
    if (r > 0 && (p.revents & POLLNVAL)) {
        return EBADF;
    }
    *ready = r > 0;
    return 0;
}

static size_t
total_len(const cmp_iobuf *pieces, int count)
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
advance(cmp_iobuf *pieces, int *count, size_t n)
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

static int
shared_write_nowait(cmp_handle_t h, const cmp_iobuf *pieces, int count,
                    size_t *done)
{
    struct iovec iov[CMP_IO_MAX_PIECES];
#  ifdef CMP_IO_NOWAIT_FLAG
    if (nowait_flag_works) {
        int n = fill_iov(iov, pieces, count, (size_t)SSIZE_MAX);
        ssize_t r = pwritev2(h, iov, n, -1, RWF_NOWAIT);
        if (r >= 0) {
            *done = (size_t)r;
            return 0;
        }
        int err = errno;
        if (!flag_refused(err)) {
            return err;
        }
        nowait_flag_works = 0;
    }
#  endif
    /* Fallback: while the pipe reports room, move PIPE_BUF at a time. */
    cmp_iobuf rest[CMP_IO_MAX_PIECES];
    for (int i = 0; i < count; i++) {
        rest[i] = pieces[i];
    }
    int left = count;
    while (total_len(rest, left) > 0) {
        int ready = 0;
        int err = poll_one(h, POLLOUT, 0, &ready);
        if (err == 0 && !ready) {
            break;
        }
        if (err != 0) {
            return *done > 0 && err == EINTR ? 0 : err;
        }
        int n = fill_iov(iov, rest, left, PIPE_BUF);
        ssize_t w = writev(h, iov, n);
        if (w < 0) {
            err = errno;
            if (err == EAGAIN || (err == EINTR && *done > 0)) {
                break;
            }
            return err;
        }
        *done += (size_t)w;
        advance(rest, &left, (size_t)w);
    }
    return 0;
}

int
cmp_io_shared_writev(cmp_handle_t h, const cmp_iobuf *pieces, int count,
                     int nowait, size_t *sent)
{
    *sent = 0;
    if (count > CMP_IO_MAX_PIECES) {
        count = CMP_IO_MAX_PIECES;
    }
    if (nowait) {
        int err = shared_write_nowait(h, pieces, count, sent);
        if (err == EWOULDBLOCK || (err == 0 && *sent == 0)) {
            err = EAGAIN;
        }
        return err;
    }
    struct iovec iov[CMP_IO_MAX_PIECES];
    int n = fill_iov(iov, pieces, count, (size_t)SSIZE_MAX);
    ssize_t w = n == 1 ? write(h, iov[0].iov_base, iov[0].iov_len)
                       : writev(h, iov, n);
    if (w < 0) {
        return errno;
    }
    *sent = (size_t)w;
    return 0;
}

int
cmp_io_shared_readv(cmp_handle_t h, const cmp_iobuf *slots, int count,
                    size_t *got)
{
    struct iovec iov[CMP_IO_MAX_PIECES];
    ssize_t r;
    *got = 0;
    int n = fill_iov(iov, slots, count, (size_t)SSIZE_MAX);
    if (n == 0) {
        return 0;
    }
#  ifdef CMP_IO_NOWAIT_FLAG
    if (nowait_flag_works) {
        r = preadv2(h, iov, n, -1, RWF_NOWAIT);
        if (r >= 0) {
            *got = (size_t)r;
            return 0;
        }
        int err = errno;
        if (!flag_refused(err)) {
            return err == EWOULDBLOCK ? EAGAIN : err;
        }
        nowait_flag_works = 0;
    }
#  endif
    /* Fallback: a readable pipe returns what it holds without blocking. */
    int ready = 0;
    int err = poll_one(h, POLLIN, 0, &ready);
    if (err != 0) {
        return err;
    }
    if (!ready) {
        return EAGAIN;
    }
    r = n == 1 ? read(h, iov[0].iov_base, iov[0].iov_len) : readv(h, iov, n);
    if (r < 0) {
        return errno == EWOULDBLOCK ? EAGAIN : errno;
    }
    *got = (size_t)r;
    return 0;
}

int
cmp_io_shared_wait(cmp_handle_t h, int for_write, double seconds, int *ready)
{
    return poll_one(h, for_write ? POLLOUT : POLLIN,
                    seconds <= 0.0 ? 0 : timeout_ms(seconds), ready);
}

size_t
cmp_io_pipe_grow(cmp_handle_t h, size_t want)
{
#  if defined(F_SETPIPE_SZ) && defined(F_GETPIPE_SZ)
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
#  else
    /* no way to resize a pipe here (macOS: the kernel grows pipes by
       itself up to 64 KiB) */
    (void)h;
    (void)want;
    return 0;
#  endif
}

#endif /* CMP_POSIX */
