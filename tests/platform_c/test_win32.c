/* tests/platform_c/test_win32.c -- plain-C tests of the Windows platform
 * layer (the win32_ files of Modules/platform) through the declarations
 * of the platform headers, without Python.  Built with MinGW-w64 and run under
 * wine by run.sh; prints one line per test and "N passed, N failed", and
 * exits 1 when anything failed.
 *
 * The program also serves as its own child process ("child" as the first
 * argument) for the cross-process tests: a semaphore and an arena whose
 * handles the child inherits, as spawned children get them.
 */
#include "platform/platform.h"
#include "platform/npipe.h"
#include "platform/winspawn.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks_failed; /* in the running test */
static int n_passed, n_failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            printf("    %s:%d: check failed: %s\n", __FILE__, __LINE__,      \
                   #cond);                                                   \
            checks_failed++;                                                 \
        }                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                       \
    do {                                                                     \
        long long va_ = (long long)(a), vb_ = (long long)(b);                \
        if (va_ != vb_) {                                                    \
            printf("    %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, \
                   __LINE__, #a, va_, #b, vb_);                              \
            checks_failed++;                                                 \
        }                                                                    \
    } while (0)

static void
run(const char *name, void (*fn)(void))
{
    checks_failed = 0;
    fn();
    if (checks_failed == 0) {
        n_passed++;
        printf("ok     %s\n", name);
    }
    else {
        n_failed++;
        printf("FAIL   %s\n", name);
    }
    fflush(stdout);
}

/* ---- helpers -------------------------------------------------------- */

/* A connected pair of TCP sockets over the loopback interface. */
static int
socket_pair(SOCKET out[2])
{
    struct sockaddr_in addr;
    int len = (int)sizeof(addr);
    SOCKET listener = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    out[0] = out[1] = INVALID_SOCKET;
    if (listener == INVALID_SOCKET) {
        return -1;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(listener, (struct sockaddr *)&addr, len) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) != 0 ||
        listen(listener, 1) != 0) {
        closesocket(listener);
        return -1;
    }
    out[0] = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (out[0] == INVALID_SOCKET ||
        connect(out[0], (struct sockaddr *)&addr, len) != 0) {
        closesocket(listener);
        return -1;
    }
    out[1] = accept(listener, NULL, NULL);
    closesocket(listener);
    return out[1] == INVALID_SOCKET ? -1 : 0;
}

static cmp_handle_t
sock_handle(SOCKET s)
{
    return (cmp_handle_t)(uintptr_t)s;
}

/* ---- common ---------------------------------------------------------- */

static void
test_monotonic(void)
{
    double a = cmp_monotonic();
    double b = cmp_monotonic();
    CHECK(a > 0.0);
    CHECK(b >= a);
    Sleep(30);
    double c = cmp_monotonic();
    /* the clock moved on, by about the sleep (not by hours or backwards) */
    CHECK(c - b >= 0.015);
    CHECK(c - b < 60.0);
}

/* ---- semaphores (win32_sem.c) ---------------------------------------- */

static void
test_sem_counts(void)
{
    cmp_sem_t s = CMP_SEM_NONE;
    CHECK_EQ(cmp_sem_create(NULL, 2, 2, &s), 0);
    CHECK(s != CMP_SEM_NONE);
    int v = -1;
    CHECK_EQ(cmp_sem_getvalue(s, &v), 0);
    CHECK_EQ(v, 2);
    CHECK_EQ(cmp_sem_trywait(s), CMP_OK);
    CHECK_EQ(cmp_sem_getvalue(s, &v), 0);
    CHECK_EQ(v, 1);
    CHECK_EQ(cmp_sem_trywait(s), CMP_OK);
    CHECK_EQ(cmp_sem_trywait(s), CMP_BUSY);
    int zero = -1;
    CHECK_EQ(cmp_sem_is_zero(s, &zero), 0);
    CHECK_EQ(zero, 1);
    /* reading the value does not change it */
    CHECK_EQ(cmp_sem_getvalue(s, &v), 0);
    CHECK_EQ(v, 0);
    CHECK_EQ(cmp_sem_post(s, 2), CMP_OK);
    CHECK_EQ(cmp_sem_is_zero(s, &zero), 0);
    CHECK_EQ(zero, 0);
    CHECK_EQ(cmp_sem_post(s, 2), CMP_OK);
    /* the kernel's maximum is the bound */
    CHECK_EQ(cmp_sem_post(s, 2), CMP_OVERFLOW);
    CHECK_EQ(cmp_sem_getvalue(s, &v), 0);
    CHECK_EQ(v, 2);
    CHECK_EQ(cmp_sem_unlink("ignored"), 0);
    CHECK_EQ(cmp_sem_close(s), 0);
}

static void
test_sem_bound_zero(void)
{
    cmp_sem_t s = CMP_SEM_NONE;
    CHECK_EQ(cmp_sem_create(NULL, 0, 0, &s), 0);
    CHECK_EQ(cmp_sem_post(s, 0), CMP_OVERFLOW);
    CHECK_EQ(cmp_sem_trywait(s), CMP_BUSY);
    CHECK_EQ(cmp_sem_close(s), 0);
}

static void
test_sem_bad_input(void)
{
    cmp_sem_t s = CMP_SEM_NONE;
    /* a start value above the maximum is refused by the kernel */
    CHECK(cmp_sem_create(NULL, 5, 2, &s) > 0);
    /* a handle that is not open */
    CHECK(cmp_sem_close((HANDLE)(uintptr_t)0x7ff0) > 0);
    CHECK(cmp_sem_trywait((HANDLE)(uintptr_t)0x7ff0) > 0);
}

static DWORD WINAPI
post_later(LPVOID arg)
{
    Sleep(50);
    cmp_sem_post((cmp_sem_t)arg, -1);
    return 0;
}

static void
test_sem_timed_wait(void)
{
    cmp_sem_t s = CMP_SEM_NONE;
    CHECK_EQ(cmp_sem_create(NULL, 0, 10, &s), 0);
    CHECK_EQ(cmp_sem_wait_for(s, 0.0), CMP_BUSY);
    double t0 = cmp_monotonic();
    CHECK_EQ(cmp_sem_wait_for(s, 0.05), CMP_BUSY);
    CHECK(cmp_monotonic() - t0 >= 0.04);
    HANDLE th = CreateThread(NULL, 0, post_later, s, 0, NULL);
    CHECK(th != NULL);
    int rc = CMP_BUSY;
    for (int i = 0; i < 200 && rc == CMP_BUSY; i++) {
        rc = cmp_sem_wait_for(s, CMP_WAIT_SLICE);
    }
    CHECK_EQ(rc, CMP_OK);
    if (th != NULL) {
        WaitForSingleObject(th, INFINITE);
        CloseHandle(th);
    }
    cmp_sem_t again = CMP_SEM_NONE;
    CHECK_EQ(cmp_sem_reopen(NULL, s, &again), 0);
    CHECK(again == s);
    CHECK_EQ(cmp_sem_close(s), 0);
}

/* ---- shared memory (win32_shm.c) ------------------------------------- */

static void
test_shm_page_size(void)
{
    size_t p = cmp_shm_page_size();
    CHECK(p >= 4096);
    CHECK((p & (p - 1)) == 0);
    CHECK_EQ(cmp_shm_page_size(), p);
}

static void
test_shm_named_segment(void)
{
    char name[64];
    snprintf(name, sizeof(name), "cmp_test_%lu_%lu",
             (unsigned long)GetCurrentProcessId(),
             (unsigned long)GetTickCount());
    cmp_mapping a, b, c;
    int created = -1;
    CHECK_EQ(cmp_shm_segment_open(name, O_CREAT | O_EXCL | O_RDWR, 0600,
                                  10000, &a, &created),
             0);
    CHECK_EQ(created, 1);
    CHECK(a.addr != NULL);
    CHECK(a.size >= 10000);
    if (a.addr == NULL) {
        return;
    }
    memcpy(a.addr, "hello", 6);
    a.addr[9999] = 'z';

    /* attach by name: same bytes, size as the system rounds it */
    CHECK_EQ(cmp_shm_segment_open(name, O_RDWR, 0600, 0, &b, &created), 0);
    CHECK_EQ(created, 0);
    if (b.addr != NULL) {
        CHECK(b.size >= 10000);
        CHECK(strcmp(b.addr, "hello") == 0);
        CHECK_EQ(b.addr[9999], 'z');
        b.addr[1] = 'E';
        CHECK_EQ(a.addr[1], 'E');
        CHECK_EQ(cmp_shm_segment_close(&b), 0);
        CHECK(b.addr == NULL);
    }

    /* O_EXCL on a name that exists */
    int err = cmp_shm_segment_open(name, O_CREAT | O_EXCL | O_RDWR, 0600,
                                   10000, &c, &created);
    CHECK_EQ(err, ERROR_ALREADY_EXISTS);
    CHECK_EQ(created, 0);

    CHECK_EQ(cmp_shm_unlink(name), 0);
    CHECK_EQ(cmp_shm_segment_close(&a), 0);
    /* closing twice is harmless */
    CHECK_EQ(cmp_shm_segment_close(&a), 0);

    /* the last handle gone, the name is gone */
    err = cmp_shm_segment_open(name, O_RDWR, 0600, 0, &c, &created);
    CHECK_EQ(err, ERROR_FILE_NOT_FOUND);
    cmp_handle_t fd;
    CHECK(cmp_shm_open_fd(name, O_RDWR, 0600, &fd) != 0);
}

static void
test_shm_arena(void)
{
    size_t size = 4 * cmp_shm_page_size();
    cmp_mapping m, view;
    CHECK_EQ(cmp_arena_create(size, &m), 0);
    if (m.addr == NULL) {
        return;
    }
    CHECK_EQ(m.size, size);
    memset(m.addr, 0xab, size);

    /* a second mapping through a duplicated handle (what a spawned child
       gets) shares the bytes */
    HANDLE dup = NULL;
    CHECK(DuplicateHandle(GetCurrentProcess(), m.handle, GetCurrentProcess(),
                          &dup, 0, FALSE, DUPLICATE_SAME_ACCESS));
    CHECK_EQ(cmp_arena_attach(dup, size, &view), 0);
    if (view.addr != NULL) {
        CHECK_EQ((unsigned char)view.addr[size - 1], 0xab);
        view.addr[7] = 1;
        CHECK_EQ(m.addr[7], 1);
        CHECK_EQ(cmp_arena_release(&view), 0);
    }
    CHECK_EQ(cmp_arena_release(&m), 0);
    CHECK_EQ(cmp_fork_epoch(), 0);

    cmp_mapping bad;
    CHECK_EQ(cmp_arena_create(0, &bad), ERROR_INVALID_PARAMETER);
}

/* ---- connections (win32_io.c) ------------------------------------------ */

static void
test_io_handles(void)
{
    cmp_handle_t h;
    CHECK_EQ(cmp_io_handle_from_value(-1, &h), CMP_BADHANDLE);
    CHECK_EQ(cmp_io_handle_from_value(1234, &h), 0);
    CHECK_EQ(cmp_io_handle_value(h), 1234);
    CHECK(cmp_io_physical_memory() > 0);
    CHECK(cmp_io_max_pieces() >= 1);
}

static void
test_io_socket(void)
{
    SOCKET s[2];
    CHECK_EQ(socket_pair(s), 0);
    cmp_handle_t a = sock_handle(s[0]), b = sock_handle(s[1]);
    int kind = -1;
    CHECK_EQ(cmp_io_kind(a, &kind), 0);
    CHECK_EQ(kind, CMP_IO_KIND_SOCKET);

    int ready = -1;
    CHECK_EQ(cmp_io_wait_readable(b, 0.0, &ready), 0);
    CHECK_EQ(ready, 0);
    char buf[64];
    size_t got = 99;
    CHECK_EQ(cmp_io_read(b, kind, buf, sizeof(buf), 1, &got),
             CMP_BUSY);

    cmp_iobuf pieces[3] = {{"\0\0\0\x05", 4}, {"hel", 3}, {"lo", 2}};
    size_t sent = 0;
    CHECK_EQ(cmp_io_writev(a, kind, pieces, 3, 0, &sent), 0);
    CHECK_EQ(sent, 9);
    CHECK_EQ(cmp_io_wait_readable(b, 5.0, &ready), 0);
    CHECK_EQ(ready, 1);
    size_t avail = 0;
    CHECK_EQ(cmp_io_pending(b, &avail), 0);
    CHECK_EQ(avail, 9);
    CHECK_EQ(cmp_io_read(b, kind, buf, 9, 0, &got), 0);
    CHECK_EQ(got, 9);
    CHECK(memcmp(buf + 4, "hello", 5) == 0);

    /* the writer closes: readable, then end of file */
    CHECK_EQ(cmp_io_close(a), 0);
    CHECK_EQ(cmp_io_wait_readable(b, 5.0, &ready), 0);
    CHECK_EQ(ready, 1);
    CHECK_EQ(cmp_io_read(b, kind, buf, sizeof(buf), 0, &got), 0);
    CHECK_EQ(got, 0);
    CHECK_EQ(cmp_io_close(b), 0);
}

static void
test_io_pipe(void)
{
    HANDLE r, w;
    CHECK(CreatePipe(&r, &w, NULL, 0));
    int kind = -1;
    CHECK_EQ(cmp_io_kind(r, &kind), 0);
    CHECK_EQ(kind, CMP_IO_KIND_PIPE);   /* anonymous pipes are pipes too */
    int ready = -1;
    CHECK_EQ(cmp_io_wait_readable(r, 0.0, &ready), 0);
    CHECK_EQ(ready, 0);

    cmp_iobuf pieces[2] = {{"abc", 3}, {"defg", 4}};
    size_t sent = 0;
    CHECK_EQ(cmp_io_writev(w, kind, pieces, 2, 0, &sent), 0);
    CHECK_EQ(sent, 7);
    size_t avail = 0;
    CHECK_EQ(cmp_io_pending(r, &avail), 0);
    CHECK_EQ(avail, 7);

    /* a socket and a pipe in one wait: only the pipe is ready */
    SOCKET s[2];
    CHECK_EQ(socket_pair(s), 0);
    cmp_handle_t hs[2] = {sock_handle(s[1]), r};
    unsigned char flags[2] = {9, 9};
    size_t n = 0;
    CHECK_EQ(cmp_io_wait_many(hs, 2, 1.0, flags, &n), 0);
    CHECK_EQ(n, 1);
    CHECK_EQ(flags[0], 0);
    CHECK_EQ(flags[1], 1);

    char buf[16];
    size_t got = 0;
    CHECK_EQ(cmp_io_read(r, kind, buf, sizeof(buf), 0, &got), 0);
    CHECK_EQ(got, 7);
    CHECK(memcmp(buf, "abcdefg", 7) == 0);

    /* nothing waiting: the wait times out */
    CHECK_EQ(cmp_io_wait_many(hs, 2, 0.02, flags, &n), 0);
    CHECK_EQ(n, 0);

    CHECK_EQ(cmp_io_close(w), 0);
    CHECK_EQ(cmp_io_read(r, kind, buf, sizeof(buf), 0, &got), 0);
    CHECK_EQ(got, 0);
    CHECK_EQ(cmp_io_close(r), 0);
    closesocket(s[0]);
    closesocket(s[1]);
}

/* ---- named pipes (win32_npipe.c, and win32_io.c on their handles) ------ */

/* Running under wine (which implements a few things differently)? */
static int
on_wine(void)
{
    HMODULE ntdll = GetModuleHandleA("ntdll.dll");
    return ntdll != NULL && GetProcAddress(ntdll, "wine_get_version") != NULL;
}

/* Read exactly len bytes through the platform layer (blocking reads). */
static int
read_all(cmp_handle_t h, char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        size_t got = 0;
        int err = cmp_io_read(h, CMP_IO_KIND_PIPE, buf + done, len - done, 0,
                              &got);
        if (err != 0) {
            printf("    read: error %d after %zu bytes\n", err, done);
            return err;
        }
        if (got == 0) {
            printf("    read: end of file after %zu bytes\n", done);
            return -1;
        }
        done += got;
    }
    return 0;
}

/* Write every byte of pieces (blocking writes). */
static int
write_all(cmp_handle_t h, cmp_iobuf *pieces, int count)
{
    while (count > 0) {
        size_t sent = 0;
        int err = cmp_io_writev(h, CMP_IO_KIND_PIPE, pieces, count, 0, &sent);
        if (err != 0) {
            return err;
        }
        while (count > 0 && sent >= pieces->len) {
            sent -= pieces->len;
            pieces++;
            count--;
        }
        if (count > 0) {
            pieces->base = (const char *)pieces->base + sent;
            pieces->len -= sent;
        }
    }
    return 0;
}

static void
test_npipe_pair_frames(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(1, e), 0);
    if (checks_failed) {
        return;
    }
    int kind = -1;
    CHECK_EQ(cmp_io_kind(e[0], &kind), 0);
    CHECK_EQ(kind, CMP_IO_KIND_PIPE);
    CHECK_EQ(cmp_io_kind(e[1], &kind), 0);
    CHECK_EQ(kind, CMP_IO_KIND_PIPE);
    /* opened for overlapped I/O (so waits use zero-byte reads) */
    CHECK_EQ(cmp_io_is_overlapped(e[0]), 1);
    CHECK_EQ(cmp_io_is_overlapped(e[1]), 1);
    HANDLE ar, aw;
    CHECK(CreatePipe(&ar, &aw, NULL, 0));
    CHECK_EQ(cmp_io_is_overlapped(ar), 0);
    CloseHandle(ar);
    CloseHandle(aw);

    /* a frame each way: header and payload gathered into one message,
       read back in two reads (the header first: ERROR_MORE_DATA inside) */
    for (int way = 0; way < 2; way++) {
        cmp_handle_t from = e[way], to = e[1 - way];
        const char *text = way ? "pong!" : "ping";
        uint32_t len = (uint32_t)strlen(text);
        cmp_iobuf pieces[3] = {{&len, 4}, {"", 0}, {text, len}};
        CHECK_EQ(write_all(from, pieces, 3), 0);
        size_t avail = 0;
        CHECK_EQ(cmp_io_pending(to, &avail), 0);
        CHECK_EQ(avail, 4 + len);
        uint32_t head = 0;
        char buf[16] = {0};
        CHECK_EQ(read_all(to, (char *)&head, 4), 0);
        CHECK_EQ(head, len);
        CHECK_EQ(cmp_io_pending(to, &avail), 0);
        CHECK_EQ(avail, len);
        CHECK_EQ(read_all(to, buf, len), 0);
        CHECK(memcmp(buf, text, len) == 0);
    }
    /* two messages, one read: a read stops at the end of a message */
    cmp_iobuf one = {"abc", 3}, two = {"defgh", 5};
    CHECK_EQ(write_all(e[0], &one, 1), 0);
    CHECK_EQ(write_all(e[0], &two, 1), 0);
    char buf[16];
    size_t got = 0;
    CHECK_EQ(cmp_io_read(e[1], CMP_IO_KIND_PIPE, buf, sizeof(buf), 0, &got),
             0);
    CHECK_EQ(got, 3);
    CHECK_EQ(cmp_io_read(e[1], CMP_IO_KIND_PIPE, buf + 3, sizeof(buf), 1,
                         &got),
             0);
    CHECK_EQ(got, 5);
    CHECK(memcmp(buf, "abcdefgh", 8) == 0);
    /* nothing left: a read that must not block says so */
    CHECK_EQ(cmp_io_read(e[1], CMP_IO_KIND_PIPE, buf, sizeof(buf), 1, &got),
             CMP_BUSY);
    CHECK_EQ(cmp_io_close(e[0]), 0);
    CHECK_EQ(cmp_io_close(e[1]), 0);
}

static void
test_npipe_one_way(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(0, e), 0);
    if (checks_failed) {
        return;
    }
    cmp_iobuf piece = {"one way", 7};
    CHECK_EQ(write_all(e[1], &piece, 1), 0);
    char buf[8] = {0};
    CHECK_EQ(read_all(e[0], buf, 7), 0);
    CHECK(strcmp(buf, "one way") == 0);
    /* the reader cannot write, the writer cannot read */
    size_t sent = 0, got = 0;
    cmp_iobuf back = {"x", 1};
    CHECK(cmp_io_writev(e[0], CMP_IO_KIND_PIPE, &back, 1, 0, &sent) != 0);
    CHECK(cmp_io_read(e[1], CMP_IO_KIND_PIPE, buf, 1, 0, &got) != 0);
    cmp_io_close(e[0]);
    cmp_io_close(e[1]);
}

#define BIG (1024 * 1024)

static DWORD WINAPI
write_big(LPVOID arg)
{
    HANDLE h = (HANDLE)arg;
    char *data = malloc(BIG);
    if (data == NULL) {
        return 1;
    }
    for (size_t i = 0; i < BIG; i++) {
        data[i] = (char)(i * 7 + i / 1000);
    }
    uint32_t len = BIG;
    cmp_iobuf pieces[2] = {{&len, 4}, {data, BIG}};
    int err = write_all(h, pieces, 2);
    free(data);
    return err == 0 ? 0 : 2;
}

static void
test_npipe_big_message(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(1, e), 0);
    if (checks_failed) {
        return;
    }
    /* both ways: the write of 1 MiB waits for the reader (8 KiB buffer) */
    for (int way = 0; way < 2; way++) {
        HANDLE th = CreateThread(NULL, 0, write_big, e[way], 0, NULL);
        CHECK(th != NULL);
        uint32_t len = 0;
        char *buf = malloc(BIG);
        CHECK(buf != NULL);
        if (th == NULL || buf == NULL) {
            free(buf);
            break;
        }
        CHECK_EQ(read_all(e[1 - way], (char *)&len, 4), 0);
        CHECK_EQ(len, BIG);
        CHECK_EQ(read_all(e[1 - way], buf, BIG), 0);
        size_t bad = 0;
        for (size_t i = 0; i < BIG; i++) {
            bad += buf[i] != (char)(i * 7 + i / 1000);
        }
        CHECK_EQ(bad, 0);
        free(buf);
        CHECK_EQ(WaitForSingleObject(th, 20000), WAIT_OBJECT_0);
        DWORD code = 9;
        GetExitCodeThread(th, &code);
        CHECK_EQ(code, 0);
        CloseHandle(th);
    }
    cmp_io_close(e[0]);
    cmp_io_close(e[1]);
}

static void
test_npipe_poll_eof(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(1, e), 0);
    if (checks_failed) {
        return;
    }
    int ready = -1;
    size_t avail = 9;
    CHECK_EQ(cmp_io_wait_readable(e[0], 0.0, &ready), 0);
    CHECK_EQ(ready, 0);
    CHECK_EQ(cmp_io_pending(e[0], &avail), 0);
    CHECK_EQ(avail, 0);
    /* a wait that times out */
    double t0 = cmp_monotonic();
    CHECK_EQ(cmp_io_wait_readable(e[0], 0.1, &ready), 0);
    CHECK_EQ(ready, 0);
    CHECK(cmp_monotonic() - t0 >= 0.08);

    cmp_iobuf piece = {"12345", 5};
    CHECK_EQ(write_all(e[1], &piece, 1), 0);
    CHECK_EQ(cmp_io_wait_readable(e[0], 5.0, &ready), 0);
    CHECK_EQ(ready, 1);
    /* a pipe and an unsignalled event in one wait */
    HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
    cmp_handle_t hs[2] = {ev, e[0]};
    unsigned char flags[2] = {9, 9};
    size_t n = 0;
    CHECK_EQ(cmp_io_wait_many(hs, 2, 1.0, flags, &n), 0);
    CHECK_EQ(n, 1);
    CHECK_EQ(flags[0], 0);
    CHECK_EQ(flags[1], 1);
    CloseHandle(ev);
    CHECK_EQ(cmp_io_pending(e[0], &avail), 0);
    CHECK_EQ(avail, 5);

    /* the peer closes: what was sent still comes, then end of file, and
       the pipe counts as readable */
    CHECK_EQ(cmp_io_close(e[1]), 0);
    char buf[8];
    CHECK_EQ(read_all(e[0], buf, 5), 0);
    CHECK(memcmp(buf, "12345", 5) == 0);
    CHECK_EQ(cmp_io_wait_readable(e[0], 5.0, &ready), 0);
    CHECK_EQ(ready, 1);
    CHECK_EQ(cmp_io_pending(e[0], &avail), 0);
    CHECK_EQ(avail, 0);
    size_t got = 9;
    CHECK_EQ(cmp_io_read(e[0], CMP_IO_KIND_PIPE, buf, sizeof(buf), 0, &got),
             0);
    CHECK_EQ(got, 0);
    CHECK_EQ(cmp_io_read(e[0], CMP_IO_KIND_PIPE, buf, sizeof(buf), 1, &got),
             0);
    CHECK_EQ(got, 0);
    /* writing to a pipe whose reader is gone is an error, not a loss */
    size_t sent = 0;
    CHECK(cmp_io_writev(e[0], CMP_IO_KIND_PIPE, &piece, 1, 0, &sent) != 0);
    CHECK_EQ(cmp_io_close(e[0]), 0);
}

static DWORD WINAPI
close_later(LPVOID arg)
{
    Sleep(50);
    CloseHandle((HANDLE)arg);
    return 0;
}

static DWORD WINAPI
interrupt_later(LPVOID arg)
{
    Sleep((DWORD)(uintptr_t)arg);
    cmp_io_interrupt_notify();
    return 0;
}

static void
test_npipe_cancelled_wait(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(1, e), 0);
    if (checks_failed) {
        return;
    }
    CHECK(cmp_io_interrupt_event() != NULL);
    /* a blocking read with nothing coming: Ctrl-C cancels it */
    HANDLE th = CreateThread(NULL, 0, interrupt_later, (LPVOID)50, 0, NULL);
    char buf[8];
    size_t got = 9;
    double t0 = cmp_monotonic();
    CHECK_EQ(cmp_io_read(e[0], CMP_IO_KIND_PIPE, buf, sizeof(buf), 0, &got),
             CMP_INTR);
    CHECK(cmp_monotonic() - t0 < 10.0);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    /* the cancelled read took nothing: the next message arrives whole */
    Sleep(250);     /* past the grace period: the interrupt is seen */
    cmp_iobuf piece = {"after", 5};
    CHECK_EQ(write_all(e[1], &piece, 1), 0);
    CHECK_EQ(read_all(e[0], buf, 5), 0);
    CHECK(memcmp(buf, "after", 5) == 0);

    /* the polling wait is cut short too */
    th = CreateThread(NULL, 0, interrupt_later, (LPVOID)50, 0, NULL);
    HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
    cmp_handle_t hs[2] = {e[0], ev};
    unsigned char flags[2];
    size_t n = 0;
    CHECK_EQ(cmp_io_wait_many(hs, 2, 30.0, flags, &n), CMP_INTR);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    CloseHandle(ev);
    Sleep(250);
    /* a stale interrupt does not cut later waits short */
    CHECK_EQ(cmp_io_interrupt_pending(), 0);
    int ready = -1;
    t0 = cmp_monotonic();
    CHECK_EQ(cmp_io_wait_readable(e[0], 0.1, &ready), 0);
    CHECK_EQ(ready, 0);
    CHECK(cmp_monotonic() - t0 >= 0.08);
    cmp_io_close(e[0]);
    cmp_io_close(e[1]);
}

typedef struct {
    HANDLE h;
    DWORD delay;
    const char *text;
} late_write;

static DWORD WINAPI
write_later(LPVOID arg)
{
    late_write *job = arg;
    Sleep(job->delay);
    cmp_iobuf piece = {job->text, strlen(job->text)};
    return write_all(job->h, &piece, 1) == 0 ? 0 : 1;
}

static void
test_npipe_wait_wakes(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(1, e), 0);
    if (checks_failed) {
        return;
    }
    /* the message comes while the wait waits: the wait says ready, and
       the zero-byte read it waited with took nothing of the message */
    late_write job = {e[1], 50, "a message that arrives late"};
    HANDLE th = CreateThread(NULL, 0, write_later, &job, 0, NULL);
    int ready = -1;
    CHECK_EQ(cmp_io_wait_readable(e[0], 30.0, &ready), 0);
    CHECK_EQ(ready, 1);
    char buf[64] = {0};
    size_t len = strlen(job.text);
    CHECK_EQ(read_all(e[0], buf, len), 0);
    CHECK(strcmp(buf, job.text) == 0);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);

    /* several pipes and a process-like handle (an event) at once: only
       the one written to is ready */
    HANDLE f[2];
    CHECK_EQ(cmp_npipe_pair(1, f), 0);
    HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
    late_write job2 = {f[0], 50, "xyz"};
    th = CreateThread(NULL, 0, write_later, &job2, 0, NULL);
    cmp_handle_t hs[3] = {e[0], ev, f[1]};
    unsigned char flags[3] = {9, 9, 9};
    size_t n = 0;
    CHECK_EQ(cmp_io_wait_many(hs, 3, 30.0, flags, &n), 0);
    CHECK_EQ(n, 1);
    CHECK_EQ(flags[0], 0);
    CHECK_EQ(flags[1], 0);
    CHECK_EQ(flags[2], 1);
    CHECK_EQ(read_all(f[1], buf, 3), 0);
    CHECK(memcmp(buf, "xyz", 3) == 0);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    /* the event set: ready too */
    SetEvent(ev);
    CHECK_EQ(cmp_io_wait_many(hs, 3, 30.0, flags, &n), 0);
    CHECK_EQ(n, 1);
    CHECK_EQ(flags[1], 1);
    /* the peer goes away during the wait: ready (end of file) */
    ResetEvent(ev);
    HANDLE closer = CreateThread(NULL, 0, close_later, f[0], 0, NULL);
    CHECK_EQ(cmp_io_wait_readable(f[1], 30.0, &ready), 0);
    CHECK_EQ(ready, 1);
    size_t got = 9;
    CHECK_EQ(cmp_io_read(f[1], CMP_IO_KIND_PIPE, buf, 8, 0, &got), 0);
    CHECK_EQ(got, 0);
    WaitForSingleObject(closer, INFINITE);
    CloseHandle(closer);
    CloseHandle(ev);
    cmp_io_close(f[1]);
    cmp_io_close(e[0]);
    cmp_io_close(e[1]);
}

typedef struct {
    const wchar_t *name;
    int err;
    HANDLE h;
} connect_job;

static DWORD WINAPI
connect_later(LPVOID arg)
{
    connect_job *job = arg;
    Sleep(50);
    job->err = cmp_npipe_connect(job->name, CMP_NPIPE_DUPLEX, 10.0, &job->h);
    return 0;
}

static void
test_npipe_listener(void)
{
    wchar_t name[80];
    swprintf(name, 80, L"\\\\.\\pipe\\cmp-test-%lu",
             (unsigned long)GetCurrentProcessId());
    HANDLE server = INVALID_HANDLE_VALUE, other = INVALID_HANDLE_VALUE;
    CHECK_EQ(cmp_npipe_create(name, CMP_NPIPE_DUPLEX | CMP_NPIPE_FIRST,
                              &server),
             0);
    if (checks_failed) {
        return;
    }
    /* the name is taken for a first instance (wine does not enforce
       FILE_FLAG_FIRST_PIPE_INSTANCE: there the second instance is made,
       and is closed again at once) */
    int err = cmp_npipe_create(name, CMP_NPIPE_DUPLEX | CMP_NPIPE_FIRST,
                               &other);
    if (on_wine()) {
        CHECK(err == 0 || err == ERROR_ACCESS_DENIED);
        if (err == 0) {
            CloseHandle(other);
        }
    }
    else {
        CHECK_EQ(err, ERROR_ACCESS_DENIED);
    }
    /* nobody connects: the accept times out, and can be repeated */
    int connected = -1;
    CHECK_EQ(cmp_npipe_accept(server, 0.05, &connected), 0);
    CHECK_EQ(connected, 0);

    connect_job job = {name, -1, INVALID_HANDLE_VALUE};
    HANDLE th = CreateThread(NULL, 0, connect_later, &job, 0, NULL);
    CHECK_EQ(cmp_npipe_accept(server, 10.0, &connected), 0);
    CHECK_EQ(connected, 1);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    CHECK_EQ(job.err, 0);
    if (job.err == 0) {
        cmp_iobuf piece = {"hi", 2};
        char buf[4];
        CHECK_EQ(write_all(job.h, &piece, 1), 0);
        CHECK_EQ(read_all(server, buf, 2), 0);
        CHECK_EQ(write_all(server, &piece, 1), 0);
        CHECK_EQ(read_all(job.h, buf, 2), 0);
        CHECK(memcmp(buf, "hi", 2) == 0);
    }
    /* the only instance is taken: a second client waits, then gives up */
    HANDLE busy = INVALID_HANDLE_VALUE;
    double t0 = cmp_monotonic();
    CHECK_EQ(cmp_npipe_connect(name, CMP_NPIPE_DUPLEX, 0.2, &busy),
             ERROR_SEM_TIMEOUT);
    CHECK(cmp_monotonic() - t0 >= 0.15);
    /* the client leaves: the server end reads end of file */
    if (job.err == 0) {
        cmp_io_close(job.h);
        char buf[4];
        size_t got = 9;
        CHECK_EQ(cmp_io_read(server, CMP_IO_KIND_PIPE, buf, 4, 0, &got), 0);
        CHECK_EQ(got, 0);
    }
    /* an accept that Ctrl-C cancels */
    HANDLE second = INVALID_HANDLE_VALUE;
    CHECK_EQ(cmp_npipe_create(name, CMP_NPIPE_DUPLEX, &second), 0);
    th = CreateThread(NULL, 0, interrupt_later, (LPVOID)50, 0, NULL);
    CHECK_EQ(cmp_npipe_accept(second, 30.0, &connected), CMP_INTR);
    CHECK_EQ(connected, 0);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    Sleep(250);
    CHECK_EQ(cmp_io_interrupt_pending(), 0);
    CloseHandle(second);
    CloseHandle(server);
    /* no such pipe */
    HANDLE none;
    CHECK_EQ(cmp_npipe_connect(L"\\\\.\\pipe\\cmp-no-such-pipe-here",
                               CMP_NPIPE_DUPLEX, 1.0, &none),
             ERROR_FILE_NOT_FOUND);
}

/* ---- queue pipes (the shared-handle calls of win32_io.c) -------------- */

/* The outcomes these tests check, read off io.h's convention (0 or a
   platform error code, *got = 0 at end of file, *ready for waits). */
enum { Q_OK = 0, Q_AGAIN = -1, Q_INTR = -2, Q_EOF = -3 };

static int
q_code(int err)
{
    if (err == CMP_BUSY) {
        return Q_AGAIN;
    }
    return err == CMP_INTR ? Q_INTR : err;
}

static int
q_read_nowait(cmp_handle_t h, void *buf, size_t len, size_t *done)
{
    cmp_iobuf slot = {buf, len};
    int err = cmp_io_shared_readv(h, &slot, 1, done);
    if (err == 0) {
        return *done > 0 ? Q_OK : Q_EOF;
    }
    return q_code(err);
}

static int
q_write_nowait(cmp_handle_t h, const cmp_iobuf *pieces, int count,
               size_t *done)
{
    int err = cmp_io_shared_writev(h, pieces, count, 1, done);
    return err == CMP_BUSY ? Q_OK : q_code(err);
}

static int
q_write_wait(cmp_handle_t h, const cmp_iobuf *pieces, int count,
             size_t *done)
{
    return q_code(cmp_io_shared_writev(h, pieces, count, 0, done));
}

static int
q_wait(cmp_handle_t h, int for_write, double seconds)
{
    int ready = 0;
    int err = cmp_io_shared_wait(h, for_write, seconds, &ready);
    if (err == 0) {
        return ready ? Q_OK : Q_AGAIN;
    }
    return q_code(err);
}

static void
test_qpipe_pipe(void)
{
    HANDLE r, w;
    CHECK(CreatePipe(&r, &w, NULL, 4096));
    char chunk[1000];
    memset(chunk, 'q', sizeof(chunk));
    cmp_iobuf piece = {chunk, sizeof(chunk)};
    char buf[2048];
    size_t done = 0;

    CHECK_EQ(q_read_nowait(r, buf, sizeof(buf), &done),
             Q_AGAIN);
    CHECK_EQ(q_wait(r, 0, 0.02), Q_AGAIN);
    /* an empty pipe has room; wine does not report a pipe's write quota,
       so there the wait cannot tell and says "not yet" (writes still go
       through, below) */
    int wrc = q_wait(w, 1, 0.0);
    CHECK(wrc == Q_OK || wrc == Q_AGAIN);

    /* fill the pipe without ever blocking: writes stop when it is full */
    size_t total = 0;
    int rounds = 0;
    for (; rounds < 10000; rounds++) {
        CHECK_EQ(q_write_nowait(w, &piece, 1, &done), Q_OK);
        total += done;
        if (done < sizeof(chunk)) {
            break;
        }
    }
    CHECK(rounds < 10000);
    CHECK(total >= 1000);
    CHECK_EQ(q_write_nowait(w, &piece, 1, &done), Q_OK);
    CHECK_EQ(done, 0);
    CHECK_EQ(q_wait(w, 1, 0.02), Q_AGAIN);
    CHECK_EQ(q_wait(r, 0, 0.0), Q_OK);

    /* drain it: every byte comes back */
    size_t back = 0;
    int rc;
    while ((rc = q_read_nowait(r, buf, sizeof(buf), &done)) ==
           Q_OK) {
        for (size_t i = 0; i < done; i++) {
            if (buf[i] != 'q') {
                checks_failed++;
                printf("    byte %zu is %d\n", back + i, buf[i]);
                break;
            }
        }
        back += done;
    }
    CHECK_EQ(rc, Q_AGAIN);
    CHECK_EQ(back, total);

    /* a blocking gathered write takes the first piece at least */
    cmp_iobuf two[2] = {{"", 0}, {"xyz", 3}};
    CHECK_EQ(q_write_wait(w, two, 2, &done), Q_OK);
    CHECK_EQ(done, 3);
    CHECK_EQ(q_read_nowait(r, buf, sizeof(buf), &done), Q_OK);
    CHECK_EQ(done, 3);

    /* every writer gone: end of file, and the wait says ready */
    CloseHandle(w);
    CHECK_EQ(q_wait(r, 0, 1.0), Q_OK);
    CHECK_EQ(q_read_nowait(r, buf, sizeof(buf), &done),
             Q_EOF);
    CloseHandle(r);
}

static void
test_qpipe_broken_writer(void)
{
    HANDLE r, w;
    CHECK(CreatePipe(&r, &w, NULL, 4096));
    CloseHandle(r);
    cmp_iobuf piece = {"data", 4};
    size_t done = 7;
    int rc = q_write_nowait(w, &piece, 1, &done);
    CHECK(rc > 0); /* an error code, not a silent loss */
    CHECK_EQ(done, 0);
    CHECK(q_write_wait(w, &piece, 1, &done) > 0);
    CloseHandle(w);
}

static void
test_qpipe_socket(void)
{
    SOCKET s[2];
    CHECK_EQ(socket_pair(s), 0);
    cmp_handle_t a = sock_handle(s[0]), b = sock_handle(s[1]);
    char buf[256];
    size_t done = 0;
    CHECK_EQ(q_read_nowait(b, buf, sizeof(buf), &done),
             Q_AGAIN);
    CHECK_EQ(q_wait(b, 0, 0.02), Q_AGAIN);
    CHECK_EQ(q_wait(a, 1, 1.0), Q_OK);

    cmp_iobuf pieces[3] = {{"\0\0\0\x03", 4}, {"", 0}, {"abc", 3}};
    CHECK_EQ(q_write_nowait(a, pieces, 3, &done), Q_OK);
    CHECK_EQ(done, 7);
    CHECK_EQ(q_write_wait(a, pieces + 2, 1, &done), Q_OK);
    CHECK_EQ(done, 3);
    CHECK_EQ(q_wait(b, 0, 5.0), Q_OK);
    size_t got = 0;
    for (int i = 0; i < 100 && got < 10; i++) {
        int rc = q_read_nowait(b, buf + got, sizeof(buf) - got, &done);
        if (rc == Q_AGAIN) {
            q_wait(b, 0, 0.05);
            continue;
        }
        CHECK_EQ(rc, Q_OK);
        got += done;
    }
    CHECK_EQ(got, 10);
    CHECK(memcmp(buf + 4, "abcabc", 6) == 0);

    closesocket(s[0]);
    CHECK_EQ(q_wait(b, 0, 5.0), Q_OK);
    CHECK_EQ(q_read_nowait(b, buf, sizeof(buf), &done),
             Q_EOF);
    closesocket(s[1]);
}

/* A queue over the one-way named pipe pair that Pipe(duplex=False) makes
   on Windows (overlapped, message mode). */
static void
test_qpipe_npipe(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(0, e), 0);
    if (checks_failed) {
        return;
    }
    HANDLE r = e[0], w = e[1];
    char chunk[1000];
    memset(chunk, 'n', sizeof(chunk));
    cmp_iobuf piece = {chunk, sizeof(chunk)};
    char buf[3000];
    size_t done = 0;
    CHECK_EQ(q_read_nowait(r, buf, sizeof(buf), &done),
             Q_AGAIN);
    CHECK_EQ(q_wait(r, 0, 0.02), Q_AGAIN);

    /* fill it without blocking: a write that would wait is cancelled */
    size_t total = 0;
    int rounds = 0;
    for (; rounds < 10000; rounds++) {
        CHECK_EQ(q_write_nowait(w, &piece, 1, &done), Q_OK);
        total += done;
        if (done < sizeof(chunk)) {
            break;
        }
    }
    CHECK(rounds < 10000);
    CHECK(total >= 1000);
    CHECK_EQ(q_wait(r, 0, 0.0), Q_OK);
    /* drain it, in reads smaller and larger than the messages */
    size_t back = 0;
    size_t sizes[2] = {300, sizeof(buf)};
    int rc, turn = 0;
    while ((rc = q_read_nowait(r, buf, sizes[turn++ % 2], &done)) ==
           Q_OK) {
        for (size_t i = 0; i < done; i++) {
            if (buf[i] != 'n') {
                checks_failed++;
                printf("    byte %zu is %d\n", back + i, buf[i]);
                break;
            }
        }
        back += done;
    }
    CHECK_EQ(rc, Q_AGAIN);
    CHECK_EQ(back, total);

    /* a blocking gathered write (the first piece), then end of file */
    cmp_iobuf two[2] = {{"", 0}, {"xyz", 3}};
    CHECK_EQ(q_write_wait(w, two, 2, &done), Q_OK);
    CHECK_EQ(done, 3);
    CHECK_EQ(q_read_nowait(r, buf, sizeof(buf), &done), Q_OK);
    CHECK_EQ(done, 3);
    CloseHandle(w);
    CHECK_EQ(q_wait(r, 0, 1.0), Q_OK);
    CHECK_EQ(q_read_nowait(r, buf, sizeof(buf), &done),
             Q_EOF);
    CloseHandle(r);
}

static void
test_qpipe_npipe_interrupt(void)
{
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(0, e), 0);
    if (checks_failed) {
        return;
    }
    HANDLE th = CreateThread(NULL, 0, interrupt_later, (LPVOID)50, 0, NULL);
    CHECK_EQ(q_wait(e[0], 0, 30.0), Q_INTR);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    Sleep(250);
    CHECK_EQ(cmp_io_interrupt_pending(), 0);
    CloseHandle(e[0]);
    CloseHandle(e[1]);
}

/* ---- spawn through CreateProcessW (win32_spawn.c) ---------------------- */

/* child_win32.exe, next to this program (wide, for CreateProcessW). */
static int
child_exe(wchar_t *out, size_t cap)
{
    wchar_t self[MAX_PATH];
    DWORD n = GetModuleFileNameW(NULL, self, MAX_PATH);
    if (n == 0 || n >= MAX_PATH) {
        return -1;
    }
    wchar_t *slash = wcsrchr(self, L'\\');
    if (slash == NULL) {
        return -1;
    }
    slash[1] = L'\0';
    return swprintf(out, cap, L"%lschild_win32.exe", self) < 0 ? -1 : 0;
}

static void
test_spawn_inherit_one(void)
{
    wchar_t exe[MAX_PATH + 32];
    CHECK_EQ(child_exe(exe, MAX_PATH + 32), 0);
    HANDLE r, w, r2, w2;
    CHECK(CreatePipe(&r, &w, NULL, 0));
    /* a second pipe whose write end IS inheritable, but not listed */
    SECURITY_ATTRIBUTES sa = {sizeof(sa), NULL, TRUE};
    CHECK(CreatePipe(&r2, &w2, &sa, 0));
    if (checks_failed) {
        return;
    }
    wchar_t cmd[2 * MAX_PATH];
    swprintf(cmd, 2 * MAX_PATH, L"\"%ls\" %llu %llu", exe,
             (unsigned long long)(uintptr_t)w,
             (unsigned long long)(uintptr_t)w2);
    cmp_winspawn_request req = {exe, cmd, &w, 1, NULL, NULL};
    HANDLE proc = NULL;
    unsigned long pid = 0;
    CHECK_EQ(cmp_winspawn(&req, &proc, &pid), 0);
    /* the flag was set for the call only */
    DWORD flags = 99;
    CHECK(GetHandleInformation(w, &flags));
    CHECK_EQ(flags & HANDLE_FLAG_INHERIT, 0);
    CHECK(GetHandleInformation(w2, &flags));
    CHECK_EQ(flags & HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
    CloseHandle(w);
    CloseHandle(w2);
    if (proc != NULL) {
        CHECK(pid != 0);
        /* what the child wrote, then end of file once it has exited (its
           copy of the write end was the last one) */
        char buf[64] = {0};
        size_t done = 0;
        for (;;) {
            size_t got = 0;
            int err = cmp_io_read(r, CMP_IO_KIND_PIPE, buf + done,
                                  sizeof(buf) - 1 - done, 0, &got);
            CHECK_EQ(err, 0);
            if (err != 0 || got == 0) {
                break;
            }
            done += got;
        }
        CHECK(strcmp(buf, "hello from the child") == 0);
        unsigned char flag = 0;
        size_t n = 0;
        CHECK_EQ(cmp_io_wait_many(&proc, 1, 20.0, &flag, &n), 0);
        CHECK_EQ(n, 1);
        DWORD code = 99;
        CHECK(GetExitCodeProcess(proc, &code));
        CHECK_EQ(code, 7);  /* 8: the unlisted handle leaked into it */
        CloseHandle(proc);
    }
    CloseHandle(r);
    CloseHandle(r2);
}

static void
test_spawn_named_pipe_end(void)
{
    /* a Pipe() end (overlapped named pipe) handed to the child */
    wchar_t exe[MAX_PATH + 32];
    CHECK_EQ(child_exe(exe, MAX_PATH + 32), 0);
    HANDLE e[2];
    CHECK_EQ(cmp_npipe_pair(0, e), 0);
    if (checks_failed) {
        return;
    }
    wchar_t cmd[2 * MAX_PATH];
    swprintf(cmd, 2 * MAX_PATH, L"\"%ls\" %llu", exe,
             (unsigned long long)(uintptr_t)e[1]);
    cmp_winspawn_request req = {NULL, cmd, &e[1], 1, NULL, NULL};
    HANDLE proc = NULL;
    unsigned long pid = 0;
    CHECK_EQ(cmp_winspawn(&req, &proc, &pid), 0);
    CloseHandle(e[1]);
    if (proc != NULL) {
        char buf[64] = {0};
        CHECK_EQ(read_all(e[0], buf, 20), 0);
        CHECK(strcmp(buf, "hello from the child") == 0);
        CHECK_EQ(WaitForSingleObject(proc, 20000), WAIT_OBJECT_0);
        DWORD code = 99;
        CHECK(GetExitCodeProcess(proc, &code));
        CHECK_EQ(code, 7);
        CloseHandle(proc);
        /* the child's end is gone with it: end of file */
        size_t got = 9;
        CHECK_EQ(cmp_io_read(e[0], CMP_IO_KIND_PIPE, buf, 8, 0, &got), 0);
        CHECK_EQ(got, 0);
    }
    CloseHandle(e[0]);
}

static void
test_spawn_env_and_cwd(void)
{
    wchar_t exe[MAX_PATH + 32];
    CHECK_EQ(child_exe(exe, MAX_PATH + 32), 0);
    wchar_t dir[MAX_PATH];
    DWORD n = GetSystemDirectoryW(dir, MAX_PATH);
    CHECK(n > 0 && n < MAX_PATH);
    if (checks_failed) {
        return;
    }
    wchar_t cmd[3 * MAX_PATH];
    swprintf(cmd, 3 * MAX_PATH, L"\"%ls\" env \"%ls\"", exe, dir);
    /* the child sees exactly the block it is given, and starts in dir */
    const wchar_t env[] = L"CMP_CHILD_EXIT=42\0OTHER=x\0";
    cmp_winspawn_request req = {exe, cmd, NULL, 0, env, dir};
    HANDLE proc = NULL;
    unsigned long pid = 0;
    CHECK_EQ(cmp_winspawn(&req, &proc, &pid), 0);
    if (proc != NULL) {
        CHECK_EQ(WaitForSingleObject(proc, 20000), WAIT_OBJECT_0);
        DWORD code = 99;
        CHECK(GetExitCodeProcess(proc, &code));
        CHECK_EQ(code, 42);
        CloseHandle(proc);
    }
    /* a working directory that does not exist: refused */
    cmp_winspawn_request bad = {exe, cmd, NULL, 0, NULL,
                                L"C:\\no\\such\\folder"};
    proc = NULL;
    int err = cmp_winspawn(&bad, &proc, &pid);
    CHECK(err == ERROR_DIRECTORY || err == ERROR_PATH_NOT_FOUND ||
          err == ERROR_FILE_NOT_FOUND);
    CHECK(proc == NULL);
}

static void
test_spawn_errors(void)
{
    wchar_t cmd[] = L"\"C:\\no\\such\\program.exe\" 1";
    cmp_winspawn_request req = {L"C:\\no\\such\\program.exe", cmd, NULL, 0,
                                NULL, NULL};
    HANDLE proc = NULL;
    unsigned long pid = 0;
    int err = cmp_winspawn(&req, &proc, &pid);
    CHECK(err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND);
    CHECK(proc == NULL);
    /* a handle in the list that is not open: refused before starting */
    wchar_t exe[MAX_PATH + 32];
    CHECK_EQ(child_exe(exe, MAX_PATH + 32), 0);
    wchar_t cmd2[2 * MAX_PATH];
    swprintf(cmd2, 2 * MAX_PATH, L"\"%ls\" 1", exe);
    HANDLE bogus = (HANDLE)(uintptr_t)0x7ff0;
    cmp_winspawn_request bad = {exe, cmd2, &bogus, 1, NULL, NULL};
    CHECK_EQ(cmp_winspawn(&bad, &proc, &pid), ERROR_INVALID_HANDLE);
    CHECK(proc == NULL);
}

/* ---- across processes --------------------------------------------------- */

static char self_path[MAX_PATH];

/* The child: wait for the parent's post on `go`, write into the arena,
   post `done`. */
static int
child_main(int argc, char **argv)
{
    if (argc != 6) {
        return 2;
    }
    cmp_sem_t go, done;
    HANDLE arena = (HANDLE)(uintptr_t)_strtoui64(argv[4], NULL, 10);
    size_t size = (size_t)_strtoui64(argv[5], NULL, 10);
    if (cmp_sem_reopen(NULL, (HANDLE)(uintptr_t)_strtoui64(argv[2], NULL, 10),
                       &go) != 0 ||
        cmp_sem_reopen(NULL, (HANDLE)(uintptr_t)_strtoui64(argv[3], NULL, 10),
                       &done) != 0) {
        return 3;
    }
    int rc = CMP_BUSY;
    for (int i = 0; i < 200 && rc == CMP_BUSY; i++) {
        rc = cmp_sem_wait_for(go, CMP_WAIT_SLICE);
    }
    if (rc != CMP_OK) {
        return 4;
    }
    cmp_mapping m;
    if (cmp_arena_attach(arena, size, &m) != 0) {
        return 5;
    }
    strcpy(m.addr + 100, "from the child");
    cmp_arena_release(&m);
    return cmp_sem_post(done, -1) == CMP_OK ? 0 : 6;
}

static void
test_child_process(void)
{
    cmp_sem_t go = CMP_SEM_NONE, done = CMP_SEM_NONE;
    cmp_mapping m;
    size_t size = cmp_shm_page_size();
    CHECK_EQ(cmp_sem_create(NULL, 0, 1, &go), 0);
    CHECK_EQ(cmp_sem_create(NULL, 0, 1, &done), 0);
    CHECK_EQ(cmp_arena_create(size, &m), 0);
    if (checks_failed) {
        return;
    }
    HANDLE inherit[3] = {go, done, m.handle};
    for (int i = 0; i < 3; i++) {
        CHECK(SetHandleInformation(inherit[i], HANDLE_FLAG_INHERIT,
                                   HANDLE_FLAG_INHERIT));
    }
    char cmd[MAX_PATH + 128];
    snprintf(cmd, sizeof(cmd), "\"%s\" child %llu %llu %llu %llu", self_path,
             (unsigned long long)(uintptr_t)go,
             (unsigned long long)(uintptr_t)done,
             (unsigned long long)(uintptr_t)m.handle,
             (unsigned long long)size);
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    memset(&si, 0, sizeof(si));
    si.cb = sizeof(si);
    BOOL ok = CreateProcessA(self_path, cmd, NULL, NULL, TRUE, 0, NULL, NULL,
                             &si, &pi);
    CHECK(ok);
    if (ok) {
        /* a process handle is a sentinel: not ready while the child runs
           (it waits for `go`), ready once it has exited */
        unsigned char flag = 9;
        size_t n = 9;
        CHECK_EQ(cmp_io_wait_many(&pi.hProcess, 1, 0.0, &flag, &n), 0);
        CHECK_EQ(n, 0);
        CHECK_EQ(cmp_sem_post(go, 1), CMP_OK);
        int rc = CMP_BUSY;
        for (int i = 0; i < 400 && rc == CMP_BUSY; i++) {
            rc = cmp_sem_wait_for(done, CMP_WAIT_SLICE);
        }
        CHECK_EQ(rc, CMP_OK);
        CHECK(strcmp(m.addr + 100, "from the child") == 0);
        CHECK_EQ(cmp_io_wait_many(&pi.hProcess, 1, 20.0, &flag, &n), 0);
        CHECK_EQ(n, 1);
        CHECK_EQ(flag, 1);
        CHECK_EQ(WaitForSingleObject(pi.hProcess, 20000), WAIT_OBJECT_0);
        DWORD code = 99;
        GetExitCodeProcess(pi.hProcess, &code);
        CHECK_EQ(code, 0);
        CloseHandle(pi.hProcess);
        CloseHandle(pi.hThread);
    }
    cmp_arena_release(&m);
    cmp_sem_close(go);
    cmp_sem_close(done);
}

int
main(int argc, char **argv)
{
    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
        printf("WSAStartup failed\n");
        return 2;
    }
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        return child_main(argc, argv);
    }
    if (GetModuleFileNameA(NULL, self_path, sizeof(self_path)) == 0) {
        printf("GetModuleFileName failed\n");
        return 2;
    }
    run("common.monotonic", test_monotonic);
    run("sem.counts", test_sem_counts);
    run("sem.bound_zero", test_sem_bound_zero);
    run("sem.bad_input", test_sem_bad_input);
    run("sem.timed_wait", test_sem_timed_wait);
    run("shm.page_size", test_shm_page_size);
    run("shm.named_segment", test_shm_named_segment);
    run("shm.arena", test_shm_arena);
    run("io.handles", test_io_handles);
    run("io.socket", test_io_socket);
    run("io.pipe", test_io_pipe);
    run("npipe.pair_frames", test_npipe_pair_frames);
    run("npipe.one_way", test_npipe_one_way);
    run("npipe.big_message", test_npipe_big_message);
    run("npipe.poll_and_eof", test_npipe_poll_eof);
    run("npipe.cancelled_wait", test_npipe_cancelled_wait);
    run("npipe.wait_wakes", test_npipe_wait_wakes);
    run("npipe.listener", test_npipe_listener);
    run("queue.pipe", test_qpipe_pipe);
    run("queue.broken_writer", test_qpipe_broken_writer);
    run("queue.socket", test_qpipe_socket);
    run("queue.named_pipe", test_qpipe_npipe);
    run("queue.named_pipe_interrupt", test_qpipe_npipe_interrupt);
    run("process.sem_and_arena_in_child", test_child_process);
    run("spawn.inherit_one_handle", test_spawn_inherit_one);
    run("spawn.named_pipe_end", test_spawn_named_pipe_end);
    run("spawn.env_and_cwd", test_spawn_env_and_cwd);
    run("spawn.errors", test_spawn_errors);
    printf("%d passed, %d failed\n", n_passed, n_failed);
    WSACleanup();
    return n_failed == 0 ? 0 : 1;
}
