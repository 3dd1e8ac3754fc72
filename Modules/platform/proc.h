/* platform/proc.h -- OS layer for child processes: fork, reaping, the
 * sentinel pipes that tell a parent (or a child) that its peer is gone.
 *
 * Every function returns 0 or a platform error code and never touches
 * Python objects, so callers may run them with the GIL released.
 */
#ifndef CMP_PLATFORM_PROC_H
#define CMP_PLATFORM_PROC_H

/* Windows has no fork(); its children are handled by popen_spawn_win32
   through process handles, so nothing below exists there and process.c
   compiles to an empty method table. */
#ifdef CMP_POSIX
/* fork() exists: the "fork" start method is available. */
#  define CMP_HAVE_FORK 1
#endif

#ifdef CMP_HAVE_FORK
/* A pipe whose two ends are not inherited by exec'd programs.
   fds[0] is the read end. */
int cmp_proc_pipe(cmp_handle_t fds[2]);

/* Close a handle; EINTR is not an error (the handle is gone either way). */
int cmp_proc_close(cmp_handle_t fd);

/* fork(2): *pid receives 0 in the child, the child's pid in the parent. */
int cmp_proc_fork(long *pid);

/* _exit(2): leave at once, without running any exit handler. */
void cmp_proc_exit_now(int code);

/* Collect the exit status of child `pid`.  With block == 0 the call does
   not wait: *done is set to 0 if the child is still running.  When the
   child is collected *done = 1 and *exitcode holds the exit status in the
   multiprocessing convention (exit code, or -signal number).
   Returns EINTR if a signal interrupted a blocking wait, ECHILD when there
   is no such child (already collected elsewhere). */
int cmp_proc_reap(long pid, int block, int *done, int *exitcode);

/* Collect any one exited child without waiting: *pid is its pid, or 0
   when none is left to collect now (ECHILD counts as none); *exitcode as
   for cmp_proc_reap.  EINTR is retried. */
int cmp_proc_reap_any(long *pid, int *exitcode);

/* Send signal `sig` to process `pid` (ESRCH when it is gone). */
int cmp_proc_signal(long pid, int sig);
#endif /* CMP_HAVE_FORK */

/* Process identity, for the owner records of locks (robust.h): this
   process's tag, the pid in the high 32 bits and the low 32 bits of its
   start time below (so a later process that reuses the pid has another
   tag).  Computed once per process (again in a forked child). */
uint64_t cmp_proc_self_tag(void);

/* Whether the process a tag names is gone: *gone = 1 when it has ended
   (a zombie counts as ended) or its pid now names a process started at
   another time.  0, or a platform error code when it cannot be told. */
int cmp_proc_tag_gone(uint64_t tag, int *gone);

#endif
