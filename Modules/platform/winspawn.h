/* platform/winspawn.h -- starting a program on Windows with CreateProcessW
 * and an explicit list of inherited handles (win32_spawn.c): what the
 * spawn start method does there.  Conventions as in platform.h.
 */
#ifndef CMP_PLATFORM_WINSPAWN_H
#define CMP_PLATFORM_WINSPAWN_H

#include "platform/platform.h"

#ifdef CMP_WINDOWS
#  include <wchar.h>

typedef struct {
    const wchar_t *exe;      /* the program; NULL: the command line's first
                                word, looked up as CreateProcessW does */
    wchar_t *cmdline;        /* the whole command line (CreateProcessW may
                                write into it while it runs) */
    const HANDLE *inherit;   /* exactly these handles are inherited */
    size_t n_inherit;
    const wchar_t *env;      /* NUL-separated "name=value" block ending in
                                two NULs; NULL: this process's */
    const wchar_t *cwd;      /* NULL: this process's */
} cmp_winspawn_request;

/* Start the program.  Each handle of req->inherit is open in the child
   under the same value, and no other handle of this process is -- not even
   one marked inheritable (PROC_THREAD_ATTRIBUTE_HANDLE_LIST).  The
   inheritance flag of those handles is set for the call only and put back
   as it was.  Returns 0 with the process handle (the sentinel; the caller
   closes it) and pid, or the error of CreateProcessW (ERROR_FILE_NOT_FOUND
   for a program that does not exist). */
int cmp_winspawn(const cmp_winspawn_request *req, HANDLE *process,
                 unsigned long *pid);

#endif /* CMP_WINDOWS */

#endif /* CMP_PLATFORM_WINSPAWN_H */
