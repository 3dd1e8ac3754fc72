/* platform/win32_internal.h -- helpers shared by the Windows files of the
   platform layer (win32_*.c), defined once in win32_common.c.  Not for
   concern files: they go through platform.h. */
#ifndef CMP_PLATFORM_WIN32_INTERNAL_H
#define CMP_PLATFORM_WIN32_INTERNAL_H

#include "platform/platform.h"

#ifdef CMP_WINDOWS
#  include <winsock2.h>

/* A handle as the SOCKET it may be. */
static inline SOCKET
cmp_win32_as_socket(cmp_handle_t h)
{
    return (SOCKET)(uintptr_t)h;
}

/* 1 when h is a socket, 0 for any other handle (a pipe, a file). */
int cmp_win32_is_socket(cmp_handle_t h);

#endif /* CMP_WINDOWS */

#endif /* CMP_PLATFORM_WIN32_INTERNAL_H */
