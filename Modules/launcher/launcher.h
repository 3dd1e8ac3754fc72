/* launcher/launcher.h -- the child launcher: a small program, shipped in the
   package, that starts a Python interpreter by loading the very shared
   libpython the parent runs on (for hosts that embed Python and have no
   python program of that version: LLDB, editors).

   It is built against the headers of the Python the package is built for
   (wheels are per version), for the PyConfig layout and the prototypes, but
   it links nothing of Python: every function comes from the library named
   on its command line, through dlsym()/GetProcAddress().

       _cmp_launcher --libpython=LIB [--executable=S] [--base-executable=S]
                     [--prefix=S] [--exec-prefix=S] [--base-prefix=S]
                     [--base-exec-prefix=S] [--stdlib-dir=S]
                     [--platlibdir=S] [--path=DIR]... -- PYTHON-ARGUMENTS...

   The options fill the PyConfig of the new interpreter (--path entries
   become sys.path, in order); PYTHON-ARGUMENTS are parsed as the python
   program parses its command line (-c CODE, -I, -X ...).  The launcher's
   own failures print one line starting "cmultiprocessing launcher:" to
   stderr and exit with CMPL_EXIT_USAGE or CMPL_EXIT_LOAD; a failure of the
   interpreter's initialisation exits as Python does (a "Fatal Python
   error" and status 1). */
#ifndef CMP_LAUNCHER_H
#define CMP_LAUNCHER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

/* bad command line, or a libpython of another version */
#define CMPL_EXIT_USAGE 64
/* the library cannot be loaded, or lacks a function */
#define CMPL_EXIT_LOAD 71

/* Command-line characters: the OS's own (wide on Windows), so that paths
   reach PyConfig without a lossy conversion. */
#ifdef _WIN32
typedef wchar_t cmpl_char;
#  define CMPL_T(s) L##s
#else
typedef char cmpl_char;
#  define CMPL_T(s) s
#endif

/* The portable part (launcher.c): parse, load, configure, run. */
int cmpl_main(int argc, cmpl_char **argv);

/* The OS part (launcher_posix.c, launcher_win32.c). */

/* Load the library at path with its symbols visible to the extension
   modules loaded later; NULL after printing why it failed. */
void *cmpl_load(const cmpl_char *path);

/* The address of name in lib, or NULL. */
void *cmpl_symbol(void *lib, const char *name);

/* Print "cmultiprocessing launcher: <what><detail>" and a newline to
   stderr (detail may be NULL). */
void cmpl_error(const char *what, const cmpl_char *detail);

/* PyConfig's argv and string setters for this OS's characters. */
#ifdef _WIN32
#  define CMPL_SET_ARGV "PyConfig_SetArgv"
#  define CMPL_SET_STRING "PyConfig_SetString"
#else
#  define CMPL_SET_ARGV "PyConfig_SetBytesArgv"
#  define CMPL_SET_STRING "PyConfig_SetBytesString"
#endif

#endif
