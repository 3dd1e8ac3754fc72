/* launcher/launcher_win32.c -- the launcher's entry point and library
   loading on Windows (a console program with a wide command line; the
   DLL's own folder is searched for its dependencies, as for python.exe). */
#include "launcher.h"

#ifdef _WIN32

#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
#  include <stdio.h>
#  include <stdlib.h>
#  include <string.h>
#  include <wchar.h>

/* Print "cmultiprocessing launcher: " and the parts that are not NULL, and
   a line end, to stderr: as UTF-16 to a console, else (a pipe, a file) as
   UTF-8.  Not through the C runtime, whose conversion from its "C" locale
   turns every character of a path outside Latin-1 into garbage. */
static void
say(const wchar_t *a, const wchar_t *b, const wchar_t *c, const wchar_t *d)
{
    const wchar_t *parts[] = {
        L"cmultiprocessing launcher: ", a, b, c, d, L"\r\n"};
    const size_t nparts = sizeof(parts) / sizeof(parts[0]);
    HANDLE err = GetStdHandle(STD_ERROR_HANDLE);
    size_t len = 0;
    wchar_t *text;
    DWORD mode, done;
    if (err == NULL || err == INVALID_HANDLE_VALUE) {
        return;
    }
    for (size_t i = 0; i < nparts; i++) {
        len += parts[i] ? wcslen(parts[i]) : 0;
    }
    text = malloc((len + 1) * sizeof(wchar_t));
    if (text == NULL) {
        return;
    }
    len = 0;
    for (size_t i = 0; i < nparts; i++) {
        size_t n = parts[i] ? wcslen(parts[i]) : 0;
        if (n > 0) {
            memcpy(text + len, parts[i], n * sizeof(wchar_t));
            len += n;
        }
    }
    text[len] = L'\0';
    if (GetConsoleMode(err, &mode)) {
        WriteConsoleW(err, text, (DWORD)len, &done, NULL);
    }
    else {
        int n = WideCharToMultiByte(CP_UTF8, 0, text, (int)len, NULL, 0, NULL,
                                    NULL);
        char *utf8 = n > 0 ? malloc((size_t)n) : NULL;
        if (utf8 != NULL && WideCharToMultiByte(CP_UTF8, 0, text, (int)len,
                                                utf8, n, NULL, NULL) == n) {
            WriteFile(err, utf8, (DWORD)n, &done, NULL);
        }
        free(utf8);
    }
    free(text);
}

int
wmain(int argc, wchar_t **argv)
{
    return cmpl_main(argc, argv);
}

void *
cmpl_load(const wchar_t *path)
{
    HMODULE lib = LoadLibraryExW(path, NULL, LOAD_WITH_ALTERED_SEARCH_PATH);
    if (lib == NULL) {
        DWORD code = GetLastError();
        wchar_t text[512];
        DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM |
                                     FORMAT_MESSAGE_IGNORE_INSERTS,
                                 NULL, code, 0, text, 512, NULL);
        while (n > 0 && (text[n - 1] == L'\n' || text[n - 1] == L'\r' ||
                         text[n - 1] == L' ' || text[n - 1] == L'.')) {
            text[--n] = L'\0';
        }
        if (n == 0) {
            swprintf(text, 512, L"error %lu", (unsigned long)code);
        }
        say(L"cannot load libpython: ", path, L": ", text);
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
    wchar_t wide[512];
    if (MultiByteToWideChar(CP_UTF8, 0, what, -1, wide, 512) == 0) {
        return; /* (the launcher's own messages are short ASCII) */
    }
    say(wide, detail, NULL, NULL);
}

#endif
