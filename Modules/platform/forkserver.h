/* platform/forkserver.h -- the forkserver's wire and its SIGCHLD
   self-pipe (POSIX only: platform/posix_forkserver.c); see platform.h for
   the conventions of this layer.  The loop (Modules/forkserver.c) waits
   with io.h's cmp_io_wait_many and reaps with proc.h's cmp_proc_reap_any.

   A request is one connection to the server's AF_UNIX listener.  The two
   sides may first talk over it (the package authenticates the client
   there); then the client sends one data byte (the number of fds, modulo
   256) with the fds themselves attached as SCM_RIGHTS, and both sides close
   it. */
#ifndef CMP_PLATFORM_FORKSERVER_H
#define CMP_PLATFORM_FORKSERVER_H

#include <stddef.h>

#ifdef CMP_POSIX

/* The most fds one request may carry. */
#  define CMP_FS_MAX_FDS 260

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

/* close() each of fds[0..n-1] that is >= 0. */
void cmp_fs_close_fds(const int *fds, size_t n);

/* Write an 8-byte native signed integer (a pid or an exit code). */
int cmp_fs_write_signed(int fd, long long value);

#endif /* CMP_POSIX */

#endif /* CMP_PLATFORM_FORKSERVER_H */
