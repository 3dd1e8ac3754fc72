/* platform/spawn.h -- starting a new program with a chosen set of inherited
   file descriptors; see platform.h for the conventions of this layer. */
#ifndef CMP_PLATFORM_SPAWN_H
#define CMP_PLATFORM_SPAWN_H

#include <stddef.h>

/* What to run.  Everything here is prepared by the caller before the call
   (the child of a fork may only read it). */
typedef struct {
    const char *path;        /* the program to execute */
    char *const *argv;       /* NULL-terminated argument vector */
    const int *keep_fds;     /* fds >= 3 to keep open: sorted, unique */
    size_t n_keep;
} cmp_spawn_request;

/* Start req->path with req->argv.  In the new program, descriptors 0, 1 and
   2 are inherited as they are, every descriptor of keep_fds is open and
   inheritable (same number), and every other descriptor is closed.  The
   signal mask and ignored signals are inherited; handled signals go back
   to their default action.

   Returns 0 and stores the child's pid in *pid_out, or returns an error
   code: the errno of a failed fork, or the errno with which exec (or the
   preparation of the fds) failed in the child -- in which case the child
   has already been reaped.  Call without the GIL. */
int cmp_spawn_fork_exec(const cmp_spawn_request *req, long *pid_out);

/* The file of the shared library that holds the code at addr (a function
   of the Python runtime: the libpython, or macOS's Python framework, or
   pythonXY.dll), NUL-terminated into buf of size bytes: file-system bytes
   on POSIX, UTF-8 on Windows.  *in_program is set to 1 (and buf left
   empty) when addr lies in the main program, the runtime being linked
   into it statically.  ENAMETOOLONG (ERROR_INSUFFICIENT_BUFFER on
   Windows): buf is too small.  Works on every platform (the child
   launcher loads that file). */
int cmp_spawn_library_of(const void *addr, char *buf, size_t size,
                         int *in_program);

/* 0 if fd is an open descriptor, else an error code (EBADF). */
int cmp_spawn_check_fd(int fd);

/* ---- the forkserver's wire and loop (POSIX) ----

   A request is one connection to the server's AF_UNIX listener.  The two
   sides may first talk over it (the package authenticates the client
   there); then the client sends one data byte (the number of fds, modulo
   256) with the fds themselves attached as SCM_RIGHTS, and both sides close
   it. */

/* The most fds one request may carry. */
#define CMP_FS_MAX_FDS 260

/* Connect a new close-on-exec stream socket to the listener at addr
   (addrlen bytes; a leading NUL byte means Linux's abstract namespace);
   the socket is stored in *sock. */
int cmp_fs_connect(const char *addr, size_t addrlen, int *sock);

/* Send the request's fds on a connected socket (E2BIG above
   CMP_FS_MAX_FDS).  EINTR is retried (the call does not wait: the data
   byte fits any socket buffer).  The caller closes sock. */
int cmp_fs_send_fds(int sock, const int *fds, size_t nfds);

/* Accept one connection on listener, close-on-exec, into *conn; with a
   timeout >= 0 every blocking read or write on it gives up (EAGAIN) after
   that many seconds.  EAGAIN/ECONNABORTED/EINTR: nothing to do this time. */
int cmp_fs_accept(int listener, double timeout, int *conn);

/* Receive a request's fds (close-on-exec) into fds[0..max-1], *nfds of
   them, from an accepted connection.  EBADMSG: the client closed without
   sending, or sent a malformed request (its fds are closed); EAGAIN: the
   accept timeout passed; EINTR: try again.  The caller closes conn. */
int cmp_fs_recv_fds(int conn, int *fds, size_t max, size_t *nfds);

/* SIGCHLD -> one byte on a non-blocking self-pipe, whose read end is
   stored in *rfd.  cmp_fs_sigchld_stop() puts the previous action back
   and closes the pipe (also what a forked child calls first). */
int cmp_fs_sigchld_start(int *rfd);
void cmp_fs_sigchld_stop(void);
void cmp_fs_drain(int fd);

/* Wait until one of fds[0..n-1] is readable or timeout seconds pass.
   ready[i] is set to 1 for each readable one.  Returns 0, or an errno
   (EINTR included: the caller runs signal handlers). */
int cmp_fs_poll(const int *fds, int *ready, int n, double timeout);

/* One exited child: *pid is 0 when none is left to reap now; *code is
   its exit code, or -signal. */
int cmp_fs_reap(long *pid, int *code);

/* close() each of fds[0..n-1] that is >= 0. */
void cmp_fs_close_fds(const int *fds, size_t n);

/* Write an 8-byte native signed integer (a pid or an exit code). */
int cmp_fs_write_signed(int fd, long long value);

#endif /* CMP_PLATFORM_SPAWN_H */
