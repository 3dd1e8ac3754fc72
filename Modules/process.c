/*
 * process.c -- the native half of process start and supervision for the
 * "fork" start method: fork() with the interpreter's at-fork protocol and
 * the two sentinel pipes created in one call, reaping children with the GIL
 * released, and waiting on a sentinel with a deadline.
 *
 * Python-level entry points (all METH_FASTCALL):
 *   fork_with_sentinels() -> (pid, fd, fd)
 *   reap(pid, block=False) -> exit code or None
 *   wait_child(pid, sentinel, timeout=None) -> exit code or None
 *   wait_readable(fd, timeout=None) -> bool
 *   send_signal(pid, sig) -> bool
 */
#include "cmp.h"

#include <errno.h>

#ifdef CMP_HAVE_FORK

/* ---- argument converters (the count check is args.c's) ----------------- */

static int
arg_pid(PyObject *obj, long *pid)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "pid must be an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v <= 0) {
        PyErr_Format(PyExc_ValueError, "pid must be positive, not %ld", v);
        return -1;
    }
    *pid = v;
    return 0;
}

static int
arg_fd(PyObject *obj, cmp_handle_t *fd)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "file descriptor must be an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || v < 0 || v > 0x7fffffffL) {
        PyErr_SetString(PyExc_ValueError, "file descriptor out of range");
        return -1;
    }
    *fd = (cmp_handle_t)v;
    return 0;
}

/* ---- fork --------------------------------------------------------------- */

static void
close_pair(cmp_handle_t fds[2])
{
    (void)cmp_proc_close(fds[0]);
    (void)cmp_proc_close(fds[1]);
}

/* fork_with_sentinels() -> (pid, a, b)
 *
 * Makes two close-on-exec pipes, then forks following the interpreter's
 * at-fork protocol (os.register_at_fork hooks, import lock, threading).
 *   parent: (pid, r, w) -- r reaches EOF once the child has exited,
 *           w is held open for as long as the child should see a parent.
 *   child:  (0, r, -1)  -- r reaches EOF once the parent let go of w.
 * The ends each side does not need are closed before returning. */
static PyObject *
proc_fork_with_sentinels(PyObject *module, PyObject *const *args,
                         Py_ssize_t nargs)
{
    (void)module;
    (void)args;
    if (cmp_check_positional("fork_with_sentinels", nargs, 0, 0) < 0) {
        return NULL;
    }
    cmp_handle_t up[2] = {-1, -1};   /* child writes (holds), parent reads */
    cmp_handle_t down[2] = {-1, -1}; /* parent writes (holds), child reads */
    int err = cmp_proc_pipe(up);
    if (err != 0) {
        return cmp_raise_oserror(err);
    }
    err = cmp_proc_pipe(down);
    if (err != 0) {
        close_pair(up);
        return cmp_raise_oserror(err);
    }

    long pid = -1;
    PyOS_BeforeFork();
    err = cmp_proc_fork(&pid);
    if (err == 0 && pid == 0) {
        PyOS_AfterFork_Child();
        (void)cmp_proc_close(up[0]);
        (void)cmp_proc_close(down[1]);
        PyObject *mine = Py_BuildValue("(lii)", 0L, (int)down[0], -1);
        if (mine == NULL) {
            /* Raising here would run the parent's code in the child. */
            PyErr_Print();
            cmp_proc_exit_now(1);
        }
        return mine;
    }
    PyOS_AfterFork_Parent();
    if (err != 0) {
        close_pair(up);
        close_pair(down);
        return cmp_raise_oserror(err);
    }
    (void)cmp_proc_close(up[1]);
    (void)cmp_proc_close(down[0]);
    PyObject *res = Py_BuildValue("(lii)", pid, (int)up[0], (int)down[1]);
    if (res == NULL) {
        /* The child runs; do not leak the pipes even so. */
        (void)cmp_proc_close(up[0]);
        (void)cmp_proc_close(down[1]);
    }
    return res;
}

/* ---- reaping ------------------------------------------------------------ */

/* Blocking or not, collect `pid`.  Returns 1 (collected, *code set),
   0 (still running, or no such child), or -1 with an exception set. */
static int
reap_child(long pid, int block, int *code)
{
    for (;;) {
        int done = 0;
        int err;
        if (block) {
            Py_BEGIN_ALLOW_THREADS
            err = cmp_proc_reap(pid, 1, &done, code);
            Py_END_ALLOW_THREADS
        }
        else {
            err = cmp_proc_reap(pid, 0, &done, code);
        }
        if (err == 0) {
            return done;
        }
        if (err == ECHILD) {
            /* Collected by someone else, or never ours: the stdlib treats
               this as "no status yet". */
            return 0;
        }
        if (err != CMP_INTR) {
            cmp_raise_oserror(err);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

static PyObject *
proc_reap(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    long pid;
    int block = 0;
    if (cmp_check_positional("reap", nargs, 1, 2) < 0 ||
        arg_pid(args[0], &pid) < 0) {
        return NULL;
    }
    if (nargs == 2 && (block = PyObject_IsTrue(args[1])) < 0) {
        return NULL;
    }
    int code = 0;
    int r = reap_child(pid, block, &code);
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(code);
}

/* One slice of a wait for `fd` to be readable (wait.h's cmp_wait_step). */
static int
fd_readable_step(void *ctx, double slice, int *err)
{
    int ready = 0;
    *err = cmp_io_wait_readable(*(cmp_handle_t *)ctx, slice, &ready);
    if (*err == 0) {
        return ready;
    }
    return *err == CMP_INTR ? 0 : -1;
}

/* Wait until `fd` is readable or the deadline passes: a first look with
   the GIL held, then cmp_wait_sliced.  Returns 1 ready, 0 timed out, -1
   error. */
static int
wait_fd_until(cmp_handle_t fd, int has_timeout, double seconds)
{
    cmp_deadline d = cmp_deadline_in(has_timeout, seconds);
    int err = 0;
    int r = fd_readable_step(&fd, 0.0, &err);  /* GIL held */
    if (r < 0) {
        cmp_raise_oserror(err);
        return -1;
    }
    if (r > 0) {
        return 1;
    }
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }
    return cmp_wait_sliced(&d, fd_readable_step, &fd);
}

/* wait_child(pid, sentinel, timeout=None) -> exit code, or None when the
   timeout passed first (or the child was collected elsewhere). */
static PyObject *
proc_wait_child(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    long pid;
    cmp_handle_t fd;
    int has_timeout;
    double seconds;
    if (cmp_check_positional("wait_child", nargs, 2, 3) < 0 ||
        arg_pid(args[0], &pid) < 0 || arg_fd(args[1], &fd) < 0 ||
        cmp_parse_timeout(nargs == 3 ? args[2] : NULL, &has_timeout,
                          &seconds) < 0) {
        return NULL;
    }
    int code = 0;
    int r = reap_child(pid, 0, &code);
    if (r == 0) {
        r = wait_fd_until(fd, has_timeout, seconds);
        if (r == 1) {
            /* The child closed its end: it is exiting.  Like the stdlib,
               wait for the status (a moment at most). */
            r = reap_child(pid, 1, &code);
        }
    }
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(code);
}

/* wait_readable(fd, timeout=None) -> True once fd is readable (or at EOF),
   False if the timeout passed first. */
static PyObject *
proc_wait_readable(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    cmp_handle_t fd;
    int has_timeout;
    double seconds;
    if (cmp_check_positional("wait_readable", nargs, 1, 2) < 0 ||
        arg_fd(args[0], &fd) < 0 ||
        cmp_parse_timeout(nargs == 2 ? args[1] : NULL, &has_timeout,
                          &seconds) < 0) {
        return NULL;
    }
    int r = wait_fd_until(fd, has_timeout, seconds);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

/* send_signal(pid, sig) -> bool: True once sent, False when the process
   no longer exists; other failures (EPERM...) raise OSError. */
static PyObject *
proc_send_signal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    long pid;
    if (cmp_check_positional("send_signal", nargs, 2, 2) < 0 ||
        arg_pid(args[0], &pid) < 0) {
        return NULL;
    }
    int overflow = 0;
    long sig = PyLong_AsLongAndOverflow(args[1], &overflow);
    if (sig == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow != 0 || sig < 0 || sig > 1024) {
        PyErr_SetString(PyExc_ValueError, "signal number out of range");
        return NULL;
    }
    int err = cmp_proc_signal(pid, (int)sig);
    if (err == ESRCH) {
        Py_RETURN_FALSE;
    }
    if (err != 0) {
        return cmp_raise_oserror(err);
    }
    Py_RETURN_TRUE;
}

#endif /* CMP_HAVE_FORK */

static PyMethodDef proc_methods[] = {
#ifdef CMP_HAVE_FORK
    {"fork_with_sentinels",
     (PyCFunction)(void (*)(void))proc_fork_with_sentinels, METH_FASTCALL,
     "fork_with_sentinels() -> (pid, fd, fd)\n\n"
     "Fork with the interpreter's at-fork protocol and two sentinel pipes.\n"
     "Parent gets (pid, exit_sentinel_r, keepalive_w); child gets\n"
     "(0, parent_sentinel_r, -1)."},
    {"reap", (PyCFunction)(void (*)(void))proc_reap, METH_FASTCALL,
     "reap(pid, block=False) -> exit code or None\n\n"
     "Collect a child's exit status (negative: killed by that signal)."},
    {"wait_child", (PyCFunction)(void (*)(void))proc_wait_child, METH_FASTCALL,
     "wait_child(pid, sentinel, timeout=None) -> exit code or None\n\n"
     "Wait for a child to end, watching its sentinel; None on timeout."},
    {"send_signal", (PyCFunction)(void (*)(void))proc_send_signal,
     METH_FASTCALL,
     "send_signal(pid, sig) -> bool\n\n"
     "Send a signal; False if the process is already gone."},
    {"wait_readable", (PyCFunction)(void (*)(void))proc_wait_readable,
     METH_FASTCALL,
     "wait_readable(fd, timeout=None) -> bool\n\n"
     "Wait until fd is readable or at end of file."},
#endif
    {NULL, NULL, 0, NULL},
};

int
cmp_process_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, proc_methods);
}
