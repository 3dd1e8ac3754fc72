/* platform/sem.h -- OS layer for counting semaphores shared between
 * processes (named POSIX semaphores; kernel semaphore objects on Windows).
 *
 * The wait/post functions never touch Python objects and may run with the
 * GIL released.  They return 0 (CMP_OK), a platform error code, or one of
 * platform.h's outcomes CMP_BUSY (the count was zero, or the wait timed
 * out), CMP_INTR (a signal interrupted the call: run the handlers, call
 * again) and CMP_OVERFLOW (a bounded post found the count at its bound).
 *
 * None of them retries on EINTR: the caller holds that policy.
 */
#ifndef CMP_PLATFORM_SEM_H
#define CMP_PLATFORM_SEM_H

#ifdef CMP_WINDOWS
typedef HANDLE cmp_sem_t;
#  define CMP_SEM_NONE ((HANDLE)NULL)
/* Windows: no names (handles are duplicated into the child instead), a
   working value query (through a wait/release pair), real timed waits. */
#  define CMP_SEM_HAVE_SEM_OPEN 0
#  define CMP_SEM_HAVE_TIMEDWAIT 0
#  define CMP_SEM_BROKEN_GETVALUE 0
#  define CMP_SEM_VALUE_MAX 0x7fffffff
/* no semaphore lives in plain shared memory: handles are duplicated */
#  define CMP_SEM_IN_MEMORY_SIZE 0
#else
#  include <semaphore.h>
#  include <limits.h>
typedef sem_t *cmp_sem_t;
#  define CMP_SEM_NONE SEM_FAILED
#  define CMP_SEM_HAVE_SEM_OPEN 1
#  ifdef CMP_DARWIN
/* macOS: sem_timedwait is missing (waits poll) and sem_getvalue fails. */
#    define CMP_SEM_HAVE_TIMEDWAIT 0
#    define CMP_SEM_BROKEN_GETVALUE 1
/* sem_init() fails with ENOSYS: only named semaphores exist. */
#    define CMP_SEM_IN_MEMORY_SIZE 0
#  else
#    define CMP_SEM_HAVE_TIMEDWAIT 1
#    define CMP_SEM_BROKEN_GETVALUE 0
/* sem_init(pshared=1) makes a semaphore in any shared mapping. */
#    define CMP_SEM_IN_MEMORY_SIZE ((int)sizeof(sem_t))
#  endif
/* Some systems define SEM_VALUE_MAX as an unsigned value that would be
   negative as an int; cap it at INT_MAX. */
#  if defined(SEM_VALUE_MAX) && (SEM_VALUE_MAX - 0) > 0 &&                    \
      (SEM_VALUE_MAX - 0) <= INT_MAX
#    define CMP_SEM_VALUE_MAX ((int)SEM_VALUE_MAX)
#  else
#    define CMP_SEM_VALUE_MAX INT_MAX
#  endif
#endif

/* Create a new semaphore called `name` holding `value`, failing with the
   platform's "already exists" code (EEXIST) when the name is taken.
   `maxvalue` is the bound where the platform enforces one (Windows). */
int cmp_sem_create(const char *name, int value, int maxvalue, cmp_sem_t *out);

/* Create a semaphore holding `value` in `mem` (len bytes of memory shared
   with the processes that will use it, 8-byte aligned): no name, no file,
   no handle.  ENOSYS where CMP_SEM_IN_MEMORY_SIZE is 0; EINVAL when len is
   below it.  Such a semaphore is never closed or destroyed (another
   process may still use it); whoever owns the memory decides when it may
   be reused. */
int cmp_sem_create_in(void *mem, size_t len, int value, cmp_sem_t *out);

/* A semaphore for a child process: reopen it by `name` when there is one,
   otherwise use the handle the parent passed down (`inherited`). */
int cmp_sem_reopen(const char *name, cmp_sem_t inherited, cmp_sem_t *out);

/* Drop this process's reference to the semaphore. */
int cmp_sem_close(cmp_sem_t sem);

/* Remove the name (the semaphore lives on while it is open somewhere). */
int cmp_sem_unlink(const char *name);

/* Take one unit if the count is above zero: CMP_OK or CMP_BUSY. */
int cmp_sem_trywait(cmp_sem_t sem);

/* Wait at most `seconds` for a unit: CMP_OK, CMP_BUSY (timed out)
   or CMP_INTR.  Meant for short slices of a longer wait. */
int cmp_sem_wait_for(cmp_sem_t sem, double seconds);

/* Wait for a unit with no time limit, as a plain blocking wait where the
   platform's wait is interrupted by signals (POSIX: EINTR): CMP_OK or
   CMP_INTR.  Where it is not (Windows), the wait lasts at most
   CMP_WAIT_SLICE and may end with CMP_BUSY.  Either way the caller
   runs the signal handlers and calls again until CMP_OK. */
int cmp_sem_wait(cmp_sem_t sem);

/* Add one unit.  With bound >= 0 the post is refused (CMP_OVERFLOW)
   when the count is already >= bound, as far as the platform can tell. */
int cmp_sem_post(cmp_sem_t sem, int bound);

/* The current count (never negative) into *value; ENOSYS where the
   platform cannot tell (CMP_SEM_BROKEN_GETVALUE). */
int cmp_sem_getvalue(cmp_sem_t sem, int *value);

/* 1 into *zero when the count is zero, 0 when it is not; works even where
   the value cannot be read. */
int cmp_sem_is_zero(cmp_sem_t sem, int *zero);

/* ---- waiting on a word of shared memory ---------------------------------

   A queue's shared-memory ring (ring.c) sleeps on a 32-bit word of the
   ring itself instead of a semaphore: a waiter sleeps only while the word
   still holds the value it read, and a waker changes the word before it
   wakes.  This needs a wait that works across processes on a shared
   mapping: Linux's futex (without FUTEX_PRIVATE_FLAG).  Where there is none
   (macOS's __ulock calls are private API, Windows' WaitOnAddress is
   per-process), cmp_addr_wait_available() is 0 and queues keep to their
   pipes. */

/* 1 where the calls below work, else 0. */
int cmp_addr_wait_available(void);

/* Sleep at most `seconds` (< 0: no limit) while *addr == expected:
   CMP_OK (woken, or the word already differs), CMP_BUSY (timed out) or
   CMP_INTR. */
int cmp_addr_wait(uint32_t *addr, uint32_t expected, double seconds);

/* Wake every process sleeping on addr. */
void cmp_addr_wake(uint32_t *addr);

#endif
