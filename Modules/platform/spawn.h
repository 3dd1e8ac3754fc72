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

#endif /* CMP_PLATFORM_SPAWN_H */
