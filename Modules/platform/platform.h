/*
 * platform.h -- the OS layer of _cmultiprocessing, behind one header.
 *
 * Concern files (connection.c, semaphore.c, ...) include this header and
 * never test MS_WINDOWS or __APPLE__ themselves.  The functions declared
 * here run without the GIL and without touching Python objects.
 *
 * Result codes, the one convention of every platform header (io.h, sem.h,
 * shm.h, proc.h, spawn.h, forkserver.h, npipe.h): a function returns 0
 * (CMP_OK) on success, or a platform error code (errno on POSIX,
 * GetLastError()/WSAGetLastError() on Windows), which the caller turns into
 * an exception with cmp_raise_oserror() once it holds the GIL again.  The
 * codes callers act on are named once, below, in the platform's numbering:
 * CMP_BUSY (nothing now: a try found nothing, a wait timed out, a
 * non-blocking transfer would block), CMP_INTR (a signal interrupted the
 * call: run the handlers, call again), CMP_BADHANDLE, CMP_NOMEMORY.  Two
 * outcomes no platform code names are negative, so they never collide with
 * one: CMP_OVERFLOW and CMP_EMPTY.  A header says which of them each
 * function can return.  (Before, sem.h had its own negative CMP_SEM_* names
 * for BUSY and INTR, shm.h a CMP_SHM_EMPTY of the same value, and io.h and
 * queue.h CMP_IO_* and CMP_QPIPE_* names of their own.)
 *
 * Each concern's declarations live in their own header, included here; the
 * implementations live in posix_<concern>.c (Linux, and macOS where the two
 * agree), darwin_<concern>.c and win32_<concern>.c.
 */
#ifndef CMP_PLATFORM_H
#define CMP_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  define CMP_WINDOWS 1
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
typedef HANDLE cmp_handle_t;
#  define CMP_INVALID_HANDLE INVALID_HANDLE_VALUE
#else
#  define CMP_POSIX 1
#  if defined(__APPLE__)
#    define CMP_DARWIN 1
#  endif
typedef int cmp_handle_t;
#  define CMP_INVALID_HANDLE (-1)
#endif

/* The codes of the convention above (see the top of this file). */
#define CMP_OK 0
#ifdef CMP_WINDOWS
#  define CMP_BUSY WSAEWOULDBLOCK
#  define CMP_INTR WSAEINTR
#  define CMP_BADHANDLE ERROR_INVALID_HANDLE
#  define CMP_NOMEMORY ERROR_NOT_ENOUGH_MEMORY
#else
#  include <errno.h>
#  define CMP_BUSY EAGAIN
#  define CMP_INTR EINTR
#  define CMP_BADHANDLE EBADF
#  define CMP_NOMEMORY ENOMEM
#endif
/* a bounded semaphore is already at its bound */
#define CMP_OVERFLOW (-3)
/* the object exists but holds nothing to map (an empty shared-memory
   segment) */
#define CMP_EMPTY (-4)

/* Monotonic clock in seconds, for deadlines. */
double cmp_monotonic(void);

#ifdef CMP_WINDOWS
/* A timeout in seconds as the milliseconds Windows waits take: INFINITE
   for a negative one, rounded up, capped just below INFINITE. */
DWORD cmp_win32_wait_ms(double timeout);
#endif

/* How many CPUs this process can run on now (at least 1).  Waits spin
   before they sleep only where another CPU can be producing meanwhile. */
int cmp_cpu_count(void);

/* How many threads the whole machine has ready to run at this moment, the
   caller included, into *count (Linux: the fourth field of /proc/loadavg;
   a read costs about 6 us, so callers cache it).  ENOSYS where the OS has
   no cheap answer (macOS, ERROR_CALL_NOT_IMPLEMENTED on Windows): a
   spinning wait then decides on the CPU count alone. */
int cmp_runnable_threads(int *count);

/* Let another runnable thread of this CPU run first, if there is one (a
   spinning wait calls it between its checks so as not to hold a CPU that
   the thread it waits for could use). */
void cmp_yield(void);

/* Sleep about `seconds` (a signal may end it sooner). */
void cmp_sleep(double seconds);

/* One lock for the few plain C values that every interpreter of the
   process shares (the queues' pipe-growth budget), now that interpreters
   with a GIL of their own can run this module at the same time.  Held for
   a few instructions, never across a call into Python or a wait; a child
   made by fork gets it unlocked. */
void cmp_process_lock(void);
void cmp_process_unlock(void);

/* The longest single wait the blocking loops make with the GIL released
   before they take the GIL to run signal handlers (seconds). */
#define CMP_WAIT_SLICE 0.05

#include "platform/io.h"
#include "platform/sem.h"
#include "platform/proc.h"
#include "platform/shm.h"
#include "platform/spawn.h"
#include "platform/forkserver.h"

#endif /* CMP_PLATFORM_H */
