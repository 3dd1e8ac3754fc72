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

#  include "platform/posix_internal.h"
#  include "platform/spawn.h"

#  include <errno.h>
#  include <fcntl.h>
#  include <signal.h>
#  include <stdint.h>
#  include <string.h>
#  include <sys/types.h>
#  include <sys/wait.h>
#  include <unistd.h>

#  include <link.h>

#  ifdef __linux__
#    include <dirent.h>
#    include <sys/syscall.h>
#    define CMP_USE_VFORK 1
#  endif

#  ifndef NSIG
#    define NSIG 65
#  endif

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

#  ifdef __linux__
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
#  endif

/* Close every descriptor in [lo, hi]. */
static int
child_close_span(unsigned int lo, unsigned int hi)
{
#  if defined(__linux__) && defined(SYS_close_range)
    if (syscall(SYS_close_range, lo, hi, 0) == 0) {
        return 0;
    }
#  endif
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
        if (i < req->n_keep && (err_done || req->keep_fds[i] < errfd)) {
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
#  ifdef __linux__
    if (child_close_by_listing(req, errfd) == 0) {
        return;
    }
#  endif
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
        if (flags < 0 || ((flags & FD_CLOEXEC) &&
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
#  ifdef CMP_USE_VFORK
    pid_t pid = vfork();
#  else
    pid_t pid = fork();
#  endif
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

/* Is addr inside the main program's loaded segments? */
static int
in_main_program(const void *addr, const void *image_base)
{
    program_probe probe = {(uintptr_t)addr, 0, 0};
    (void)image_base;
    dl_iterate_phdr(probe_main_program, &probe);
    return probe.in_program;
}

int
cmp_spawn_library_of(const void *addr, char *buf, size_t size, int *in_program)
{
    return cmp_posix_library_of(addr, in_main_program, buf, size, in_program);
}

#endif /* CMP_POSIX && !CMP_DARWIN */
