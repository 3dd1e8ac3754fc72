/* launcher/launcher_win32.c -- the launcher's entry point and library
   loading on Windows (a console program with a wide command line; the
   DLL's own folder is searched for its dependencies, as for python.exe). */
#include "launcher.h"

#ifdef _WIN32

#ifndef WIN32_LEAN_AND_MEAN
#  define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <stdio.h>

int
wmain(int argc, wchar_t **argv)
{
    return cmpl_main(argc, argv);
}

void *
cmpl_load(const wchar_t *path)
{
    HMODULE lib = LoadLibraryExW(path, NULL,
                                 LOAD_WITH_ALTERED_SEARCH_PATH);
    if (lib == NULL) {
        DWORD code = GetLastError();
        wchar_t text[512];
        DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM |
                                 FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code,
                                 0, text, 512, NULL);
        while (n > 0 && (text[n - 1] == L'\n' || text[n - 1] == L'\r' ||
                         text[n - 1] == L' ' || text[n - 1] == L'.')) {
            text[--n] = L'\0';
        }
        if (n == 0) {
            swprintf(text, 512, L"error %lu", (unsigned long)code);
        }
        fwprintf(stderr, L"cmultiprocessing launcher: cannot load "
                 L"libpython: %ls: %ls\n", path, text);
        fflush(stderr);
    }
    return (void *)lib;
}

void *
cmpl_symbol(void *lib, const char *name)
{
    return (void *)GetProcAddress((HMODULE)lib, name);
}

void
cmpl_error(const char *what, const wchar_t *detail)
{
    fwprintf(stderr, L"cmultiprocessing launcher: %hs%ls\n", what,
             detail ? detail : L"");
    fflush(stderr);
}

#endif
