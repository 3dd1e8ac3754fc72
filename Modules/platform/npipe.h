/* platform/npipe.h -- Windows named pipes: the AF_PIPE family of
 * Listener/Client and the two ends of Pipe() (win32_npipe.c).
 *
 * Every handle made here is opened FILE_FLAG_OVERLAPPED, so that a blocking
 * read, write or accept can wait on its I/O event together with the Ctrl-C
 * event and be cancelled (CancelIoEx) when Ctrl-C comes.  The pipes are
 * message-type pipes read in message mode, as the stdlib makes them; the
 * connection code reads them as byte streams (a read that gets part of a
 * message, ERROR_MORE_DATA, simply returns what it got).
 *
 * Conventions as in platform.h: 0 or a GetLastError() code, no Python
 * objects, callable without the GIL.  Nothing here exists on POSIX.
 */
#ifndef CMP_PLATFORM_NPIPE_H
#define CMP_PLATFORM_NPIPE_H

#include "platform/platform.h"

#ifdef CMP_WINDOWS
#  include <wchar.h>

/* Flags of cmp_npipe_create / cmp_npipe_connect. */
enum {
    CMP_NPIPE_DUPLEX = 1, /* both ways (else: server reads, client writes) */
    CMP_NPIPE_FIRST = 2, /* FILE_FLAG_FIRST_PIPE_INSTANCE: fail if taken */
    CMP_NPIPE_ONLY = 4, /* one instance only (a pair's private pipe) */
};

/* The buffer size the stdlib gives its pipes. */
#  define CMP_NPIPE_BUFSIZE 8192

/* A manual-reset event that is set when Ctrl-C (or Ctrl-Break) reaches the
   process; the blocking waits of the Windows layer also wait on it and
   return CMP_INTR when it fires, after cancelling their I/O.
   Created, with its console control handler, on first use; NULL if that
   failed (waits then cannot be interrupted). */
HANDLE cmp_io_interrupt_event(void);

/* What the console control handler does on Ctrl-C: wake every wait of the
   Windows layer (also for a SIGINT raised without the console). */
void cmp_io_interrupt_notify(void);

/* 1 if an interrupt is pending for a waiter (and consume it once it has
   been seen for long enough that Python has run its own handler). */
int cmp_io_interrupt_pending(void);

/* Wait for the overlapped operation `ov` on `h`, which returned
   ERROR_IO_PENDING, at most `ms` milliseconds (INFINITE: no limit), or
   until Ctrl-C.  When the time is up or Ctrl-C comes, the operation is
   cancelled and waited for (so `ov` may go away afterwards).  Returns 0
   with *n bytes transferred when it completed -- also when it completed
   while being cancelled --, WAIT_TIMEOUT or CMP_INTR when it
   was cancelled, else the operation's own error (ERROR_MORE_DATA
   included, with *n set). */
int cmp_io_overlapped_wait(HANDLE h, OVERLAPPED *ov, DWORD ms, DWORD *n);

/* 1 if `h` was opened for overlapped I/O (FILE_FLAG_OVERLAPPED: neither
   synchronous flag in its FileModeInformation), 0 if not or if that
   cannot be told. */
int cmp_io_is_overlapped(HANDLE h);

/* NtQueryInformationFile(h) of class `info_class` into `info` (`size`
   bytes): 0, ERROR_NOT_SUPPORTED where the call is missing, or
   ERROR_INVALID_HANDLE when the handle cannot answer it. */
int cmp_win32_query_file(HANDLE h, void *info, unsigned long size,
                         int info_class);

/* Create one server instance of the pipe `name` (\\.\pipe\...).  Remote
   clients are refused (PIPE_REJECT_REMOTE_CLIENTS). */
int cmp_npipe_create(const wchar_t *name, int flags, HANDLE *server);

/* Wait at most `timeout` seconds (< 0: forever) for a client to connect to
   `server`.  *connected = 1 when one did (also when it has already gone
   again: reads then give end of file).  CMP_INTR on Ctrl-C.  A
   wait that ends without a client leaves no I/O pending on the handle, so
   the call can simply be repeated. */
int cmp_npipe_accept(HANDLE server, double timeout, int *connected);

/* Open the client end of the pipe `name`, waiting at most `timeout`
   seconds (< 0: forever) while every instance is busy; ERROR_SEM_TIMEOUT
   when none became free, ERROR_FILE_NOT_FOUND when there is no such pipe.
   The handle reads in message mode. */
int cmp_npipe_connect(const wchar_t *name, int flags, double timeout,
                      HANDLE *client);

/* A connected pair under a fresh unique name: ends[0] is the server end
   (the reader when not duplex), ends[1] the client end (the writer). */
int cmp_npipe_pair(int duplex, HANDLE ends[2]);

#endif /* CMP_WINDOWS */

#endif /* CMP_PLATFORM_NPIPE_H */
