/* launcher/launcher_posix.c -- the launcher's entry point and library
   loading on Linux and macOS (dlopen; the framework's Python binary on
   macOS loads the same way as a libpython.so). */
#include "launcher.h"

#ifndef _WIN32

#  include <dlfcn.h>
#  include <stdio.h>

int
main(int argc, char **argv)
{
    return cmpl_main(argc, argv);
}

void *
cmpl_load(const char *path)
{
    /* RTLD_GLOBAL: extension modules are not linked against libpython and
       find its symbols in the global scope. */
    void *lib = dlopen(path, RTLD_LAZY | RTLD_GLOBAL);
    if (lib == NULL) {
        const char *why = dlerror();
        cmpl_error("cannot load libpython: ", why ? why : path);
    }
    return lib;
}

void *
cmpl_symbol(void *lib, const char *name)
{
    return dlsym(lib, name);
}

void
cmpl_error(const char *what, const char *detail)
{
    fprintf(stderr, "cmultiprocessing launcher: %s%s\n", what,
            detail ? detail : "");
    fflush(stderr);
}

#endif
