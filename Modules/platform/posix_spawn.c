/* platform/posix_spawn.c -- fork+exec keeping a chosen set of descriptors
   (Linux and the other POSIX systems; macOS has darwin_spawn.c).

   Linux uses vfork(): the child shares the parent's memory until it execs,
   so it only reads what the parent prepared, writes nothing but its own
   stack, and calls only async-signal-safe functions.  All signals are
   blocked around vfork() so that no handler of the parent runs in the
   child; the child puts handled signals back to their default action and
   then restores the caller's mask before exec.  An exec failure is sent to
   the parent as an errno value over a close-on-exec pipe. */
#include "platform/platform.h"

#if defined(CMP_POSIX) && !defined(CMP_DARWIN)

#include "platform/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dlfcn.h>
#include <link.h>

#ifdef __linux__
#  include <dirent.h>
#  include <sys/syscall.h>
#  define CMP_USE_VFORK 1
#endif

#ifndef NSIG
#  define NSIG 65
#endif

int
cmp_spawn_check_fd(int fd)
{
    if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
        return EBADF;
    }
    return 0;
}

/* ---- everything below until the parent part runs in the child ---- */

/* Is fd one the child keeps?  keep is sorted; it is short, so a linear
   scan is as good as a search. */
static int
child_keeps(const cmp_spawn_request *req, int errfd, int fd)
{
    if (fd < 3 || fd == errfd) {
        return 1;
    }
    for (size_t i = 0; i < req->n_keep; i++) {
        if (req->keep_fds[i] == fd) {
            return 1;
        }
        if (req->keep_fds[i] > fd) {
            break;
        }
    }
    return 0;
}

#ifdef __linux__
/* Old kernels without close_range(): walk /proc/self/fd with raw
   getdents64 (opendir() allocates, so it is not allowed here). */
struct cmp_dirent64 {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static int
child_close_by_listing(const cmp_spawn_request *req, int errfd)
{
    int dirfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        return -1;
    }
    char buf[4096];
    for (;;) {
        long n = syscall(SYS_getdents64, dirfd, buf, sizeof(buf));
        if (n <= 0) {
            break;
        }
        for (long off = 0; off < n;) {
            struct cmp_dirent64 *ent = (struct cmp_dirent64 *)(buf + off);
            off += ent->d_reclen;
            int fd = 0;
            const char *p = ent->d_name;
            if (*p < '0' || *p > '9') {
                continue;
            }
            while (*p >= '0' && *p <= '9') {
                fd = fd * 10 + (*p++ - '0');
            }
            if (fd != dirfd && !child_keeps(req, errfd, fd)) {
                close(fd);
            }
        }
    }
    close(dirfd);
    return 0;
}
#endif

/* Close every descriptor in [lo, hi]. */
static int
child_close_span(unsigned int lo, unsigned int hi)
{
#if defined(__linux__) && defined(SYS_close_range)
    if (syscall(SYS_close_range, lo, hi, 0) == 0) {
        return 0;
    }
#endif
    (void)lo;
    (void)hi;
    return -1;
}

static void
child_close_others(const cmp_spawn_request *req, int errfd, long max_fd)
{
    unsigned int lo = 3;
    size_t i = 0;
    int err_done = 0;
    /* Walk the kept fds (keep_fds merged with errfd) in increasing order,
       closing the gaps between them. */
    for (;;) {
        int next;
        if (i < req->n_keep &&
            (err_done || req->keep_fds[i] < errfd)) {
            next = req->keep_fds[i++];
        }
        else if (!err_done) {
            next = errfd;
            err_done = 1;
        }
        else {
            break;
        }
        if ((unsigned int)next > lo &&
            child_close_span(lo, (unsigned int)next - 1) < 0) {
            goto slow;
        }
        if ((unsigned int)next + 1 > lo) {
            lo = (unsigned int)next + 1;
        }
    }
    if (child_close_span(lo, ~0U) == 0) {
        return;
    }
slow:
#ifdef __linux__
    if (child_close_by_listing(req, errfd) == 0) {
        return;
    }
#endif
    for (long fd = 3; fd < max_fd; fd++) {
        if (!child_keeps(req, errfd, (int)fd)) {
            close((int)fd);
        }
    }
}

static void
child_default_handlers(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) != 0) {
            continue;
        }
        if (!(sa.sa_flags & SA_SIGINFO) &&
            (sa.sa_handler == SIG_IGN || sa.sa_handler == SIG_DFL)) {
            continue;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigemptyset(&sa.sa_mask);
        (void)sigaction(sig, &sa, NULL);
    }
}

static void
child_report(int errfd, int code)
{
    const char *p = (const char *)&code;
    size_t left = sizeof(code);
    while (left > 0) {
        ssize_t n = write(errfd, p, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        p += n;
        left -= (size_t)n;
    }
}

static void
child_exec(const cmp_spawn_request *req, int errfd, long max_fd,
           const sigset_t *mask)
{
    int code;
    child_default_handlers();
    for (size_t i = 0; i < req->n_keep; i++) {
        int fd = req->keep_fds[i];
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0 ||
            ((flags & FD_CLOEXEC) &&
             fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)) {
            code = errno;
            goto fail;
        }
    }
    child_close_others(req, errfd, max_fd);
    pthread_sigmask(SIG_SETMASK, mask, NULL);
    execv(req->path, req->argv);
    code = errno;
fail:
    child_report(errfd, code);
    _exit(127);
}

/* ---- parent ---- */

static int
read_child_errno(int fd, int *code)
{
    char *p = (char *)code;
    size_t got = 0;
    while (got < sizeof(*code)) {
        ssize_t n = read(fd, p + got, sizeof(*code) - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    return got == sizeof(*code);
}

int
cmp_spawn_fork_exec(const cmp_spawn_request *req, long *pid_out)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        return errno;
    }
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 256) {
        max_fd = 256;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
#ifdef CMP_USE_VFORK
    pid_t pid = vfork();
#else
    pid_t pid = fork();
#endif
    if (pid == 0) {
        child_exec(req, pipefd[1], max_fd, &old);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        return fork_errno;
    }
    int code = 0;
    int failed = read_child_errno(pipefd[0], &code);
    close(pipefd[0]);
    if (failed) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return code != 0 ? code : ECHILD;
    }
    *pid_out = (long)pid;
    return 0;
}

/* ---- the library holding the Python runtime ---- */

typedef struct {
    uintptr_t addr;
    int visited;
    int in_program;
} program_probe;

/* dl_iterate_phdr() visits the main program first: is addr inside one of
   its loaded segments? */
static int
probe_main_program(struct dl_phdr_info *info, size_t size, void *data)
{
    program_probe *p = data;
    (void)size;
    if (p->visited++) {
        return 1;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && p->addr >= start &&
            p->addr < start + ph->p_memsz) {
            p->in_program = 1;
        }
    }
    return 1;
}

int
cmp_spawn_library_of(const void *addr, char *buf, size_t size,
                     int *in_program)
{
    *in_program = 0;
    if (size > 0) {
        buf[0] = '\0';
    }
    Dl_info info;
    program_probe probe = {(uintptr_t)addr, 0, 0};
    if (dladdr(addr, &info) == 0 || info.dli_fname == NULL ||
        info.dli_fname[0] == '\0') {
        return ENOENT;   /* not in any loaded image: cannot happen */
    }
    dl_iterate_phdr(probe_main_program, &probe);
    if (probe.in_program) {
        *in_program = 1;
        return 0;
    }
    if (strlen(info.dli_fname) >= size) {
        return ENAMETOOLONG;
    }
    strcpy(buf, info.dli_fname);
    return 0;
}

#endif /* CMP_POSIX && !CMP_DARWIN */

/* ======================================================================
   The forkserver's wire and loop primitives (every POSIX system).
   ====================================================================== */
#ifdef CMP_POSIX

#include "platform/io.h"
#include "platform/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* macOS loses descriptors still in flight when the sender closes them, so
   there the receiver acknowledges with one byte before the sender goes on. */
#ifdef CMP_DARWIN
#  define CMP_FS_ACK 1
#else
#  define CMP_FS_ACK 0
#endif

void
cmp_fs_close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
}

static int
set_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        return errno;
    }
    return 0;
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
    int err = set_cloexec(sock);
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
    int err = set_cloexec(conn);
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
    int err = cmp_io_recvfds(conn, fds, max, &n, &count, 1, &got,
                             &truncated);
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
            set_cloexec(p[i]) != 0) {
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
cmp_fs_poll(const int *fds, int *ready, int n, double timeout)
{
    struct pollfd p[8];
    if (n > 8) {
        return EINVAL;
    }
    for (int i = 0; i < n; i++) {
        p[i].fd = fds[i];
        p[i].events = POLLIN;
        p[i].revents = 0;
        ready[i] = 0;
    }
    int ms = timeout < 0 ? -1 : (int)(timeout * 1000.0);
    int r = poll(p, (nfds_t)n, ms);
    if (r < 0) {
        return errno;
    }
    for (int i = 0; i < n; i++) {
        ready[i] = (p[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    }
    return 0;
}

int
cmp_fs_reap(long *pid, int *code)
{
    int status = 0;
    pid_t got;
    while ((got = waitpid(-1, &status, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (got < 0) {
        *pid = 0;
        return errno == ECHILD ? 0 : errno;
    }
    *pid = (long)got;
    if (got > 0) {
        if (WIFSIGNALED(status)) {
            *code = -WTERMSIG(status);
        }
        else if (WIFEXITED(status)) {
            *code = WEXITSTATUS(status);
        }
        else {
            *code = 255;
        }
    }
    return 0;
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
