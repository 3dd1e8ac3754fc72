/* tools/cross/aarch64-macos/pyconfig.h -- a small stand-in for the
 * pyconfig.h of a CPython 3.12 framework build on macOS arm64 (Apple
 * silicon), enough for Python.h to compile the extension's sources with
 * `zig cc -target aarch64-macos` on another machine.  Only compile checks
 * use it; a real macOS build uses the interpreter's own pyconfig.h.
 *
 * Sizes are those of the LP64 Darwin ABI; HAVE_* are the facilities of
 * macOS 11+ that the public headers test.  Written for this project, not
 * taken from a generated file.
 */
#ifndef CMP_CROSS_PYCONFIG_H
#define CMP_CROSS_PYCONFIG_H

/* ---- what the interpreter was configured as ---- */
#define Py_ENABLE_SHARED 1          /* framework builds: libpython is a dylib */
#define WITH_DOC_STRINGS 1
#define WITH_PYMALLOC 1
#define WITH_THREAD 1
#define PY_SUPPORT_TIER 1
#define PY_BUILTIN_HASHLIB_HASHES "md5,sha1,sha256,sha512,sha3,blake2"

/* feature-test macros the interpreter compiles with on Darwin */
#ifndef _DARWIN_C_SOURCE
#  define _DARWIN_C_SOURCE 1
#endif
#define _FILE_OFFSET_BITS 64
#define _LARGEFILE_SOURCE 1

/* ---- type sizes (LP64, 16-byte long double is absent on arm64) ---- */
#define SIZEOF_SHORT 2
#define SIZEOF_INT 4
#define SIZEOF_LONG 8
#define SIZEOF_LONG_LONG 8
#define SIZEOF_LONG_DOUBLE 8
#define SIZEOF_FLOAT 4
#define SIZEOF_DOUBLE 8
#define SIZEOF_VOID_P 8
#define SIZEOF_SIZE_T 8
#define SIZEOF_UINTPTR_T 8
#define SIZEOF_TIME_T 8
#define SIZEOF_OFF_T 8
#define SIZEOF_PID_T 4
#define SIZEOF_FPOS_T 8
#define SIZEOF_WCHAR_T 4
#define SIZEOF__BOOL 1
#define ALIGNOF_LONG 8
#define ALIGNOF_SIZE_T 8
#define DOUBLE_IS_LITTLE_ENDIAN_IEEE754 1

/* ---- headers ---- */
#define HAVE_STDDEF_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#define HAVE_UNISTD_H 1
#define HAVE_WCHAR_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_SELECT_H 1
#define HAVE_PTHREAD_H 1
#define HAVE_DLFCN_H 1
#define HAVE_SIGNAL_H 1

/* ---- facilities ---- */
#define HAVE_SSIZE_T 1
#define HAVE_FORK 1
#define HAVE_SIGACTION 1
#define HAVE_CLOCK_GETTIME 1
#define HAVE_DLOPEN 1
#define HAVE_DECL_RTLD_NOW 1
#define HAVE_READLINK 1
#define HAVE_REALPATH 1
#define HAVE_KQUEUE 1
#define HAVE_STD_ATOMIC 1
#define HAVE_BUILTIN_ATOMIC 1
#define HAVE_GCC_UINT128_T 1
#define HAVE_LIBDL 1
#define HAVE_SEM_OPEN 1
#define HAVE_SHM_OPEN 1
#define HAVE_SHM_UNLINK 1
#define POSIX_SEMAPHORES_NOT_ENABLED 1 /* configure's verdict on macOS */
#define HAVE_BROKEN_SEM_GETVALUE 1
/* no sem_timedwait, pipe2, memfd_create, MSG_NOSIGNAL, posix_fallocate */

#define ENABLE_IPV6 1

#endif /* CMP_CROSS_PYCONFIG_H */
