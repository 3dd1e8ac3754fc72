/* platform/posix_io.c -- POSIX implementation of platform/io.h: reads and
 * gathered writes on sockets and pipes, poll(2) waits, SCM_RIGHTS. */
#include "platform/platform.h"
#include "platform/darwin.h"

#ifdef CMP_POSIX
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#  define MSG_NOSIGNAL 0
#endif

/* Linux hands received descriptors over already close-on-exec. */
#ifdef MSG_CMSG_CLOEXEC
#  define CMP_RECV_CLOEXEC MSG_CMSG_CLOEXEC
#else
#  define CMP_RECV_CLOEXEC 0
#endif

#include <fcntl.h>

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
#ifdef CMP_DARWIN
    (void)cmp_darwin_nosigpipe(fd);     /* EPIPE, not SIGPIPE */
#endif
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
#ifdef IOV_MAX
    return IOV_MAX < 1024 ? IOV_MAX : 1024;
#else
    return 16;
#endif
}

int
cmp_io_writev(cmp_handle_t fd, int kind, const cmp_iobuf *pieces, int count,
              int nowait, size_t *sent)
{
    struct iovec iov[64];
    ssize_t n;
    if (count > 64) {
        count = 64;
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
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES);
    long size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && size > 0) {
        return (uint64_t)pages * (uint64_t)size;
    }
#endif
    return 0;
}

int
cmp_io_sendfds(cmp_handle_t sock, const int *fds, size_t nfds,
               const void *msg, size_t msglen, size_t *sent)
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
#if CMP_RECV_CLOEXEC == 0
    for (size_t i = 0; i < count; i++) {
        (void)fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
#endif
    *nfds = count;
    *got = (size_t)n;
    free(control);
    return 0;
}

#endif /* CMP_POSIX */
