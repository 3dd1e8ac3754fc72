/* platform/win32_spawn.c -- CreateProcessW with an explicit handle list
 * (platform/winspawn.h).
 */
#include "platform/winspawn.h"
#include "platform/spawn.h"

#ifdef CMP_WINDOWS
#  include <stdlib.h>
#  include <string.h>

/* Handles are marked inheritable for the call only: the list attribute
   requires it.  Another thread creating a process with bInheritHandles and
   no list at that moment could also inherit them -- the window is the
   CreateProcessW call. */
static int
mark_inheritable(const HANDLE *handles, size_t n, unsigned char *was)
{
    for (size_t i = 0; i < n; i++) {
        DWORD flags = 0;
        if (!GetHandleInformation(handles[i], &flags)) {
            int err = (int)GetLastError();
            while (i-- > 0) {
                if (!was[i]) {
                    SetHandleInformation(handles[i], HANDLE_FLAG_INHERIT, 0);
                }
            }
            return err;
        }
        was[i] = (flags & HANDLE_FLAG_INHERIT) != 0;
        if (!was[i] && !SetHandleInformation(handles[i], HANDLE_FLAG_INHERIT,
                                             HANDLE_FLAG_INHERIT)) {
            int err = (int)GetLastError();
            while (i-- > 0) {
                if (!was[i]) {
                    SetHandleInformation(handles[i], HANDLE_FLAG_INHERIT, 0);
                }
            }
            return err;
        }
    }
    return 0;
}

static void
restore_inheritable(const HANDLE *handles, size_t n, const unsigned char *was)
{
    for (size_t i = 0; i < n; i++) {
        if (!was[i]) {
            SetHandleInformation(handles[i], HANDLE_FLAG_INHERIT, 0);
        }
    }
}

int
cmp_winspawn(const cmp_winspawn_request *req, HANDLE *process,
             unsigned long *pid)
{
    STARTUPINFOEXW si;
    PROCESS_INFORMATION pi;
    LPPROC_THREAD_ATTRIBUTE_LIST attrs = NULL;
    unsigned char *was = NULL;
    DWORD flags = CREATE_UNICODE_ENVIRONMENT;
    int err = 0;

    memset(&si, 0, sizeof(si));
    memset(&pi, 0, sizeof(pi));
    si.StartupInfo.cb = sizeof(si.StartupInfo);
    if (req->n_inherit > 0) {
        /* the list of handles to inherit, as a thread attribute */
        SIZE_T size = 0;
        InitializeProcThreadAttributeList(NULL, 1, 0, &size);
        attrs = malloc(size);
        was = malloc(req->n_inherit);
        if (attrs == NULL || was == NULL) {
            free(attrs);
            free(was);
            return ERROR_NOT_ENOUGH_MEMORY;
        }
        if (!InitializeProcThreadAttributeList(attrs, 1, 0, &size)) {
            err = (int)GetLastError();
            free(attrs);
            free(was);
            return err;
        }
        if (!UpdateProcThreadAttribute(
                attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
                (PVOID)req->inherit, req->n_inherit * sizeof(HANDLE), NULL,
                NULL)) {
            err = (int)GetLastError();
        }
        else {
            err = mark_inheritable(req->inherit, req->n_inherit, was);
        }
        if (err != 0) {
            DeleteProcThreadAttributeList(attrs);
            free(attrs);
            free(was);
            return err;
        }
        si.StartupInfo.cb = sizeof(si);
        si.lpAttributeList = attrs;
        flags |= EXTENDED_STARTUPINFO_PRESENT;
    }
    BOOL ok = CreateProcessW(req->exe, req->cmdline, NULL, NULL,
                             req->n_inherit > 0, flags, (LPVOID)req->env,
                             req->cwd, &si.StartupInfo, &pi);
    err = ok ? 0 : (int)GetLastError();
    if (attrs != NULL) {
        restore_inheritable(req->inherit, req->n_inherit, was);
        DeleteProcThreadAttributeList(attrs);
        free(attrs);
        free(was);
    }
    if (err != 0) {
        return err;
    }
    CloseHandle(pi.hThread);
    *process = pi.hProcess;
    *pid = (unsigned long)pi.dwProcessId;
    return 0;
}

/* The DLL holding addr (pythonXY.dll), unless it is the program's own
   module; its path as UTF-8. */
int
cmp_spawn_library_of(const void *addr, char *buf, size_t size, int *in_program)
{
    *in_program = 0;
    if (size > 0) {
        buf[0] = '\0';
    }
    HMODULE module = NULL;
    wchar_t path[32768];
    DWORD n;
    int written;
    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                                GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            (LPCWSTR)addr, &module)) {
        return (int)GetLastError();
    }
    if (module == GetModuleHandleW(NULL)) {
        *in_program = 1;
        return 0;
    }
    n = GetModuleFileNameW(module, path, 32768);
    if (n == 0 || n >= 32768) {
        return n == 0 ? (int)GetLastError() : ERROR_INSUFFICIENT_BUFFER;
    }
    written = WideCharToMultiByte(CP_UTF8, 0, path, -1, buf,
                                  size > 0x7fffffff ? 0x7fffffff : (int)size,
                                  NULL, NULL);
    if (written == 0) {
        return (int)GetLastError();
    }
    return 0;
}

#endif /* CMP_WINDOWS */
