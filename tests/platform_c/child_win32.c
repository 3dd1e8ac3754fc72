/* tests/platform_c/child_win32.c -- the tiny program that the spawn tests
 * of test_win32.c start through cmp_winspawn (built next to it by run.sh).
 *
 *   child_win32.exe HANDLE [OTHER]
 *   child_win32.exe env DIR
 *
 * Writes a greeting to the inherited handle HANDLE and exits with 7.  With
 * OTHER (a handle value of the parent that was NOT in the inherit list) it
 * first tries to write to that one too: exit code 8 when that worked (the
 * handle leaked into the child), 9 when HANDLE itself was unusable.
 * With "env": exits with the number in $CMP_CHILD_EXIT (3 when unset),
 * or 4 when the current directory is not DIR.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <stdlib.h>
#include <string.h>

static HANDLE
handle_arg(const char *text)
{
    return (HANDLE)(uintptr_t)_strtoui64(text, NULL, 10);
}

/* One whole write, with an OVERLAPPED structure so that it is right for
   handles opened for overlapped I/O (named pipes) and for others alike. */
static int
write_to(HANDLE h, const char *text)
{
    OVERLAPPED ov;
    DWORD n = 0;
    memset(&ov, 0, sizeof(ov));
    ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov.hEvent == NULL) {
        return 0;
    }
    BOOL ok = WriteFile(h, text, (DWORD)strlen(text), NULL, &ov);
    if (ok || GetLastError() == ERROR_IO_PENDING) {
        ok = GetOverlappedResult(h, &ov, &n, TRUE);
    }
    CloseHandle(ov.hEvent);
    return ok && n == (DWORD)strlen(text);
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        return 2;
    }
    if (strcmp(argv[1], "env") == 0 && argc == 3) {
        char here[MAX_PATH];
        DWORD n = GetCurrentDirectoryA(MAX_PATH, here);
        if (n == 0 || n >= MAX_PATH || _stricmp(here, argv[2]) != 0) {
            return 4;
        }
        const char *code = getenv("CMP_CHILD_EXIT");
        return code == NULL ? 3 : atoi(code);
    }
    if (argc > 2 && write_to(handle_arg(argv[2]), "x")) {
        return 8;
    }
    if (!write_to(handle_arg(argv[1]), "hello from the child")) {
        return 9;
    }
    CloseHandle(handle_arg(argv[1]));
    return 7;
}
