/* tools/cross/x86_64-windows-gnu/pyconfig.h -- a small stand-in for the
 * interpreter's PC/pyconfig.h on 64-bit Windows, enough for Python.h to
 * compile the extension's sources with `zig cc -target x86_64-windows-gnu`
 * (clang and the MinGW-w64 headers) on another machine.  Only compile
 * checks use it; a real Windows build uses the interpreter's own header.
 *
 * Sizes are those of the LLP64 Windows ABI (long is 32 bits, wchar_t 16);
 * the API is imported from python3XX.dll (Py_ENABLE_SHARED with
 * __declspec(dllimport)).  Written for this project.
 */
#ifndef CMP_CROSS_PYCONFIG_H
#define CMP_CROSS_PYCONFIG_H

#ifndef _WIN32
#  error "this pyconfig.h is for Windows targets only"
#endif

/* ---- platform identity, as PC/pyconfig.h spells it ---- */
#define MS_WIN32 1
#define MS_WIN64 1
#define MS_WINDOWS 1
#define NT_THREADS 1
#define WITH_THREAD 1
#define PLATFORM "win32"
#define COMPILER "[clang (zig cc) cross check]"

/* the extension imports the C API from the interpreter's DLL */
#define Py_ENABLE_SHARED 1
#define HAVE_DECLSPEC_DLL 1
#define MS_COREDLL 1

#define WITH_DOC_STRINGS 1
#define WITH_PYMALLOC 1
#define PY_SUPPORT_TIER 1

/* Vista+ API (SRWLOCK, condition variables, GetTickCount64, ...) */
#ifndef _WIN32_WINNT
#  define _WIN32_WINNT 0x0A00
#endif
#ifndef NTDDI_VERSION
#  define NTDDI_VERSION 0x0A000000
#endif
#define Py_WINVER _WIN32_WINNT
#define Py_NTDDI NTDDI_VERSION

/* ---- type sizes (LLP64) ---- */
#define SIZEOF_SHORT 2
#define SIZEOF_INT 4
#define SIZEOF_LONG 4
#define SIZEOF_LONG_LONG 8
#define SIZEOF_LONG_DOUBLE 8
#define SIZEOF_FLOAT 4
#define SIZEOF_DOUBLE 8
#define SIZEOF_VOID_P 8
#define SIZEOF_SIZE_T 8
#define SIZEOF_UINTPTR_T 8
#define SIZEOF_TIME_T 8
#define SIZEOF_OFF_T 4
#define SIZEOF_PID_T SIZEOF_INT
#define SIZEOF_FPOS_T 8
#define SIZEOF_HKEY 8
#define SIZEOF_WCHAR_T 2
#define SIZEOF__BOOL 1
#define ALIGNOF_LONG 4
#define ALIGNOF_SIZE_T 8
#define HAVE_USABLE_WCHAR_T 1
#define DOUBLE_IS_LITTLE_ENDIAN_IEEE754 1

/* ---- headers and facilities the public headers test ---- */
#define HAVE_STDDEF_H 1
#define HAVE_WCHAR_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SSIZE_T 1      /* MinGW-w64 has ssize_t (MSVC builds typedef it) */
#define HAVE_LARGEFILE_SUPPORT 1
#define HAVE_CLOCK 1
#define HAVE_STRFTIME 1
#define HAVE_DYNAMIC_LOADING 1
#define HAVE_X509_VERIFY_PARAM_SET1_HOST 1
#define ENABLE_IPV6 1
/* no fork, no sigaction, no unistd.h on Windows */

#endif /* CMP_CROSS_PYCONFIG_H */
