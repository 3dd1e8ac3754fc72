/* platform/posix_forkserver.c -- POSIX implementation of
   platform/forkserver.h: the forkserver's wire (connect, pass fds over an
   AF_UNIX socket, accept with a time limit) and its SIGCHLD self-pipe.
   The loop itself is Modules/forkserver.c; it waits with the io layer's
   cmp_io_wait_many and reaps with proc.h's cmp_proc_reap_any. */
#include "platform/platform.h"

#ifdef CMP_POSIX

#  include "platform/io.h"
#  include "platform/forkserver.h"
#  include "platform/posix_internal.h"

#  include <errno.h>
#  include <fcntl.h>
#  include <poll.h>
#  include <signal.h>
#  include <stdint.h>
#  include <string.h>
#  include <sys/socket.h>
#  include <sys/time.h>
#  include <sys/types.h>
#  include <sys/un.h>
#  include <unistd.h>

/* macOS loses descriptors still in flight when the sender closes them, so
   there the receiver acknowledges with one byte before the sender goes on. */
#  ifdef CMP_DARWIN
#    define CMP_FS_ACK 1
#  else
#    define CMP_FS_ACK 0
#  endif

void
cmp_fs_close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
}

/* The outcome of a connect() that a signal interrupted. */
static int
finish_connect(int sock)
{
    struct pollfd p = {.fd = sock, .events = POLLOUT, .revents = 0};
    while (poll(&p, 1, -1) < 0) {
        if (errno != EINTR) {
            return errno;
        }
    }
    int soerr = 0;
    socklen_t size = sizeof(soerr);
    if (getsockopt(sock, SOL_SOCKET, SO_ERROR, &soerr, &size) < 0) {
        return errno;
    }
    return soerr;
}

int
cmp_fs_connect(const char *addr, size_t addrlen, int *sock_out)
{
    struct sockaddr_un sun;
    *sock_out = -1;
    if (addrlen == 0 || addrlen >= sizeof(sun.sun_path)) {
        return ENAMETOOLONG;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, addr, addrlen);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                                addrlen + (addr[0] != '\0'));
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    if (sock < 0) {
        return errno;
    }
    int err = cmp_posix_set_cloexec(sock);
    if (err == 0 && connect(sock, (struct sockaddr *)&sun, len) < 0) {
        /* A connect interrupted by a signal goes on in the background;
           wait for its outcome rather than starting it again. */
        err = errno;
        if (err == EINTR) {
            err = finish_connect(sock);
        }
    }
    if (err != 0) {
        close(sock);
        return err;
    }
    *sock_out = sock;
    return 0;
}

int
cmp_fs_send_fds(int sock, const int *fds, size_t nfds)
{
    if (nfds > CMP_FS_MAX_FDS) {
        return E2BIG;
    }
    unsigned char count = (unsigned char)(nfds % 256);
    size_t sent = 0;
    int err;
    while ((err = cmp_io_sendfds(sock, fds, nfds, &count, 1, &sent)) ==
           EINTR) {
    }
    if (err == 0 && CMP_FS_ACK) {
        char ack = 0;
        ssize_t got;
        while ((got = recv(sock, &ack, 1, 0)) < 0 && errno == EINTR) {
        }
        if (got != 1 || ack != 'A') {
            err = got < 0 ? errno : EPIPE;
        }
    }
    return err;
}

/* SO_RCVTIMEO and SO_SNDTIMEO of sock: timeout seconds. */
static int
set_io_timeout(int sock, double timeout)
{
    struct timeval tv;
    tv.tv_sec = (time_t)timeout;
    tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
    if (tv.tv_sec == 0 && tv.tv_usec == 0) {
        tv.tv_usec = 1;     /* zero would mean no limit */
    }
    if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
        return errno;
    }
    return 0;
}

int
cmp_fs_accept(int listener, double timeout, int *conn_out)
{
    *conn_out = -1;
    int conn = accept(listener, NULL, NULL);
    if (conn < 0) {
        return errno;
    }
    int err = cmp_posix_set_cloexec(conn);
    if (err == 0 && timeout >= 0) {
        err = set_io_timeout(conn, timeout);
    }
    if (err != 0) {
        close(conn);
        return err;
    }
    *conn_out = conn;
    return 0;
}

int
cmp_fs_recv_fds(int conn, int *fds, size_t max, size_t *nfds)
{
    *nfds = 0;
    if (max > CMP_FS_MAX_FDS) {
        max = CMP_FS_MAX_FDS;
    }
    unsigned char count = 0;
    size_t n = 0, got = 0;
    int truncated = 0;
    int err = cmp_io_recvfds(conn, fds, max, &n, &count, 1, &got, &truncated);
    if (err != 0) {
        return err;
    }
    if (got == 0 || truncated || count != (unsigned char)(n % 256)) {
        /* the client went away before sending, or sent a broken request */
        cmp_fs_close_fds(fds, n);
        return EBADMSG;
    }
    if (CMP_FS_ACK) {
        char ack = 'A';
        (void)send(conn, &ack, 1, 0);
    }
    *nfds = n;
    return 0;
}

/* The write end of the SIGCHLD self-pipe: a C int only the handler and
   the start/stop functions touch. */
static volatile sig_atomic_t sigchld_wfd = -1;
static int sigchld_rfd = -1;
static struct sigaction sigchld_saved;

static void
sigchld_handler(int sig)
{
    int saved = errno;
    char b = 0;
    (void)sig;
    if (sigchld_wfd >= 0) {
        (void)write(sigchld_wfd, &b, 1);
    }
    errno = saved;
}

int
cmp_fs_sigchld_start(int *rfd)
{
    int p[2];
    if (pipe(p) < 0) {
        return errno;
    }
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(p[i], F_GETFL);
        if (fl < 0 || fcntl(p[i], F_SETFL, fl | O_NONBLOCK) < 0 ||
            cmp_posix_set_cloexec(p[i]) != 0) {
            int err = errno;
            close(p[0]);
            close(p[1]);
            return err;
        }
    }
    sigchld_rfd = p[0];
    sigchld_wfd = p[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sigchld_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, &sigchld_saved) < 0) {
        int err = errno;
        sigchld_wfd = -1;
        sigchld_rfd = -1;
        close(p[0]);
        close(p[1]);
        return err;
    }
    *rfd = p[0];
    return 0;
}

void
cmp_fs_sigchld_stop(void)
{
    if (sigchld_rfd < 0) {
        return;
    }
    (void)sigaction(SIGCHLD, &sigchld_saved, NULL);
    int w = sigchld_wfd;
    sigchld_wfd = -1;
    close(w);
    close(sigchld_rfd);
    sigchld_rfd = -1;
}

void
cmp_fs_drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

int
cmp_fs_write_signed(int fd, long long value)
{
    const char *p = (const char *)&value;
    size_t left = sizeof(value);
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        p += n;
        left -= (size_t)n;
    }
    return 0;
}

#endif /* CMP_POSIX */
