/* tests/platform_c/test_libraryof_win32.c -- cmp_spawn_library_of() on
 * Windows (win32_spawn.c), run under wine by launcher.sh:
 *
 *     test_libraryof_win32.exe DLL
 *
 * loads DLL (the fake python DLL, from a folder with a non-ASCII name) and
 * checks that a function and a datum of it are found in that file, named in
 * UTF-8; that a function of this program gives in_program = 1 and an empty
 * buffer; and that a buffer too small is an error, not a cut path.  Prints
 * one line per check and "N passed, N failed"; exits 1 on any failure.
 */
#include "platform/platform.h"
#include "platform/spawn.h"

#include <stdio.h>
#include <string.h>

static int n_passed, n_failed;

static void
check(int ok, const char *what)
{
    printf("%s  %s\n", ok ? "ok    " : "FAIL  ", what);
    if (ok) {
        n_passed++;
    }
    else {
        n_failed++;
    }
}

int
wmain(int argc, wchar_t **argv)
{
    static char expected[32768 * 3 + 1], buf[32768 * 3 + 1];
    HMODULE dll;
    void *fn, *datum;
    int err, in_program;

    if (argc != 2) {
        fprintf(stderr, "usage: test_libraryof_win32.exe DLL\n");
        return 2;
    }
    if (WideCharToMultiByte(CP_UTF8, 0, argv[1], -1, expected,
                            (int)sizeof(expected), NULL, NULL) == 0) {
        fprintf(stderr, "cannot convert the DLL's path\n");
        return 2;
    }
    dll = LoadLibraryW(argv[1]);
    check(dll != NULL, "LoadLibraryW(DLL)");
    if (dll == NULL) {
        printf("%d passed, %d failed\n", n_passed, n_failed + 1);
        return 1;
    }
    fn = (void *)GetProcAddress(dll, "Py_InitializeFromConfig");
    datum = (void *)GetProcAddress(dll, "Py_Version");
    check(fn != NULL && datum != NULL, "the DLL exports its symbols");

    in_program = -1;
    err = cmp_spawn_library_of(fn, buf, sizeof(buf), &in_program);
    check(err == 0 && in_program == 0, "a function of the DLL: found");
    check(strcmp(buf, expected) == 0,
          "a function of the DLL: the DLL's path, in UTF-8");
    if (strcmp(buf, expected) != 0) {
        printf("        got      %s\n        expected %s\n", buf, expected);
    }

    in_program = -1;
    err = cmp_spawn_library_of(datum, buf, sizeof(buf), &in_program);
    check(err == 0 && in_program == 0 && strcmp(buf, expected) == 0,
          "a datum of the DLL: the DLL's path");

    in_program = -1;
    strcpy(buf, "junk");
    err = cmp_spawn_library_of((const void *)&check, buf, sizeof(buf),
                               &in_program);
    check(err == 0 && in_program == 1 && buf[0] == '\0',
          "a function of the program: in_program, empty buffer");

    in_program = -1;
    memset(buf, 'x', 16);
    err = cmp_spawn_library_of(fn, buf, 8, &in_program);
    check(err == ERROR_INSUFFICIENT_BUFFER && in_program == 0,
          "a buffer too small: ERROR_INSUFFICIENT_BUFFER");
    if (err != ERROR_INSUFFICIENT_BUFFER) {
        printf("        error %d\n", err);
    }

    FreeLibrary(dll);
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
