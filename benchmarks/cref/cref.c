/*
 * cref.c -- what this machine can do at best, in plain C, so that every
 * figure of benchmarks/bench.py can be read against a floor.
 *
 *   cref TEST COUNT [ARG]
 *
 * runs TEST COUNT times and prints one line:  <seconds per operation> <bytes
 * per operation>  (bytes is 0 for latency tests).  Tests:
 *
 *   pipe_rtt        64-byte round trip over two pipes between two processes
 *   sock_rtt        64-byte round trip over an AF_UNIX socketpair
 *   sock_bw         1 MiB messages one way over an AF_UNIX socketpair
 *   pipe_bw         1 MiB messages one way over a pipe
 *   futex_pingpong  round trip between two processes waking each other with
 *                   futex(2) on a shared word (Linux only)
 *   sem_pingpong    the same with two process-shared POSIX semaphores
 *   fork_wait       fork(), _exit(0) in the child, waitpid() in the parent
 *   spawn_true      posix_spawn() of /bin/true and waitpid()
 *   spawn_exe       posix_spawn() of ARG with "-c pass" (interpreter start)
 *
 * Exit status 2 means "not available on this system"; 1 means a failure
 * (with a message on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

extern char **environ;

#define MSG_SMALL 64
#define MSG_BIG (1 << 20)

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
die(const char *what)
{
    fprintf(stderr, "cref: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* read or write exactly len bytes; 0 on success, -1 on EOF or error */
static int
full_io(int fd, char *buf, size_t len, int writing)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = writing ? write(fd, buf + done, len - done)
                            : read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

static void
reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            die("waitpid");
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "cref: child failed (status %d)\n", status);
        exit(1);
    }
}

/* Round trips: the parent writes on `out`, the child echoes from `cin` to
   `cout`, the parent reads back on `in`. */
static double
round_trips(long count, int out, int cin, int cout, int in, int close_a,
            int close_b)
{
    char buf[MSG_SMALL];
    memset(buf, 'x', sizeof buf);
    pid_t pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        close(close_a);
        for (long i = 0; i < count; i++) {
            if (full_io(cin, buf, sizeof buf, 0) < 0 ||
                full_io(cout, buf, sizeof buf, 1) < 0) {
                _exit(1);
            }
        }
        _exit(0);
    }
    close(close_b);
    double t0 = now();
    for (long i = 0; i < count; i++) {
        if (full_io(out, buf, sizeof buf, 1) < 0 ||
            full_io(in, buf, sizeof buf, 0) < 0) {
            die("round trip");
        }
    }
    double t1 = now();
    reap(pid);
    return (t1 - t0) / (double)count;
}

static double
pipe_rtt(long count)
{
    int down[2], up[2];
    if (pipe(down) < 0 || pipe(up) < 0) {
        die("pipe");
    }
    /* only one end of each is closed per side; good enough for a bench */
    return round_trips(count, down[1], down[0], up[1], up[0], down[1], up[1]);
}

static double
sock_rtt(long count)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        die("socketpair");
    }
    return round_trips(count, sv[0], sv[1], sv[1], sv[0], sv[0], sv[1]);
}

/* One-way bandwidth: the parent sends count messages of 1 MiB; the child
   reads them all and answers one byte; the clock stops at that byte. */
static double
bandwidth(long count, int use_socket)
{
    int fds[2], ack[2];
    if (use_socket ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0
                   : pipe(fds) < 0) {
        die("channel");
    }
    if (pipe(ack) < 0) {
        die("pipe");
    }
    char *buf = malloc(MSG_BIG);
    if (buf == NULL) {
        die("malloc");
    }
    memset(buf, 'y', MSG_BIG);
    pid_t pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        /* pipe: the parent writes fds[1]; socketpair: it writes fds[0] */
        int rd = use_socket ? fds[1] : fds[0];
        close(use_socket ? fds[0] : fds[1]);
        for (long i = 0; i < count; i++) {
            if (full_io(rd, buf, MSG_BIG, 0) < 0) {
                _exit(1);
            }
        }
        char c = 'k';
        _exit(full_io(ack[1], &c, 1, 1) < 0 ? 1 : 0);
    }
    int wr = use_socket ? fds[0] : fds[1];
    double t0 = now();
    for (long i = 0; i < count; i++) {
        if (full_io(wr, buf, MSG_BIG, 1) < 0) {
            die("write");
        }
    }
    char c;
    if (full_io(ack[0], &c, 1, 0) < 0) {
        die("ack");
    }
    double t1 = now();
    reap(pid);
    free(buf);
    return (t1 - t0) / (double)count;
}

#ifdef __linux__
static void
futex_wait_for(volatile uint32_t *word, uint32_t want)
{
    uint32_t seen;
    while ((seen = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != want) {
        if (syscall(SYS_futex, word, FUTEX_WAIT, seen, NULL, NULL, 0) < 0 &&
            errno != EAGAIN && errno != EINTR) {
            die("futex wait");
        }
    }
}

static void
futex_set(volatile uint32_t *word, uint32_t value)
{
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
    if (syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0) < 0) {
        die("futex wake");
    }
}

static double
futex_pingpong(long count)
{
    volatile uint32_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) {
        die("mmap");
    }
    w[0] = 0; /* ping: parent -> child */
    w[16] = 0; /* pong: child -> parent, on another cache line */
    pid_t pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        for (long i = 1; i <= count; i++) {
            futex_wait_for(&w[0], (uint32_t)i);
            futex_set(&w[16], (uint32_t)i);
        }
        _exit(0);
    }
    double t0 = now();
    for (long i = 1; i <= count; i++) {
        futex_set(&w[0], (uint32_t)i);
        futex_wait_for(&w[16], (uint32_t)i);
    }
    double t1 = now();
    reap(pid);
    munmap((void *)w, 4096);
    return (t1 - t0) / (double)count;
}
#endif

#ifndef __APPLE__
static void
sem_wait_retry(sem_t *s)
{
    while (sem_wait(s) < 0) {
        if (errno != EINTR) {
            die("sem_wait");
        }
    }
}

static double
sem_pingpong(long count)
{
    sem_t *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        die("mmap");
    }
    if (sem_init(&s[0], 1, 0) < 0 || sem_init(&s[1], 1, 0) < 0) {
        die("sem_init");
    }
    pid_t pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        for (long i = 0; i < count; i++) {
            sem_wait_retry(&s[0]);
            sem_post(&s[1]);
        }
        _exit(0);
    }
    double t0 = now();
    for (long i = 0; i < count; i++) {
        sem_post(&s[0]);
        sem_wait_retry(&s[1]);
    }
    double t1 = now();
    reap(pid);
    sem_destroy(&s[0]);
    sem_destroy(&s[1]);
    munmap(s, 4096);
    return (t1 - t0) / (double)count;
}
#endif

static double
fork_wait(long count)
{
    double t0 = now();
    for (long i = 0; i < count; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            die("fork");
        }
        if (pid == 0) {
            _exit(0);
        }
        reap(pid);
    }
    return (now() - t0) / (double)count;
}

static double
spawn_wait(long count, char *const argv[])
{
    double t0 = now();
    for (long i = 0; i < count; i++) {
        pid_t pid;
        int err = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
        if (err != 0) {
            errno = err;
            die("posix_spawn");
        }
        reap(pid);
    }
    return (now() - t0) / (double)count;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: cref TEST COUNT [ARG]\n");
        return 1;
    }
    const char *test = argv[1];
    long count = strtol(argv[2], NULL, 10);
    if (count <= 0) {
        fprintf(stderr, "cref: COUNT must be positive\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    double per_op;
    long bytes = 0;
    if (strcmp(test, "pipe_rtt") == 0) {
        per_op = pipe_rtt(count);
    }
    else if (strcmp(test, "sock_rtt") == 0) {
        per_op = sock_rtt(count);
    }
    else if (strcmp(test, "sock_bw") == 0) {
        per_op = bandwidth(count, 1);
        bytes = MSG_BIG;
    }
    else if (strcmp(test, "pipe_bw") == 0) {
        per_op = bandwidth(count, 0);
        bytes = MSG_BIG;
    }
    else if (strcmp(test, "futex_pingpong") == 0) {
#ifdef __linux__
        per_op = futex_pingpong(count);
#else
        return 2;
#endif
    }
    else if (strcmp(test, "sem_pingpong") == 0) {
#ifndef __APPLE__
        per_op = sem_pingpong(count);
#else
        return 2;
#endif
    }
    else if (strcmp(test, "fork_wait") == 0) {
        per_op = fork_wait(count);
    }
    else if (strcmp(test, "spawn_true") == 0) {
        char *args[] = {"/bin/true", NULL};
        per_op = spawn_wait(count, args);
    }
    else if (strcmp(test, "spawn_exe") == 0) {
        if (argc < 4) {
            fprintf(stderr, "cref: spawn_exe needs a program\n");
            return 1;
        }
        char *args[] = {argv[3], "-c", "pass", NULL};
        per_op = spawn_wait(count, args);
    }
    else {
        fprintf(stderr, "cref: unknown test %s\n", test);
        return 1;
    }
    printf("%.9g %ld\n", per_op, bytes);
    return 0;
}
