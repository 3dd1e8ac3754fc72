/* platform/win32_shm.c -- shared memory on Windows: named segments are
   paging-file backed file mappings (the name lives while a handle is open,
   so there is nothing to unlink); arenas are unnamed mappings whose handle
   is duplicated into spawned children. */
#include "platform/platform.h"

#ifdef CMP_WINDOWS
#  include <errno.h>
#  include <fcntl.h>
#  include <stdlib.h>

#  ifndef O_CREAT
#    define O_CREAT 0x0100
#  endif
#  ifndef O_EXCL
#    define O_EXCL 0x0400
#  endif

size_t
cmp_shm_page_size(void)
{
    static size_t cached;
    if (cached == 0) {
        SYSTEM_INFO info;
        GetSystemInfo(&info);
        cached = info.dwPageSize ? (size_t)info.dwPageSize : 4096;
    }
    return cached;
}

/* UTF-8 name to a newly allocated wide string (free() it). */
static int
wide_name(const char *name, wchar_t **out)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, name, -1, NULL,
                                0);
    if (n <= 0) {
        return (int)GetLastError();
    }
    wchar_t *w = malloc((size_t)n * sizeof(wchar_t));
    if (w == NULL) {
        return ERROR_NOT_ENOUGH_MEMORY;
    }
    if (MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, name, -1, w, n) <=
        0) {
        int err = (int)GetLastError();
        free(w);
        return err;
    }
    *out = w;
    return 0;
}

/* Map the whole of mapping `h` into *m (which then owns h); `size` 0 asks
   for the mapping's size.  *m is left as it is on an error. */
static int
map_view(HANDLE h, size_t size, cmp_mapping *m)
{
    void *p = MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, size);
    if (p == NULL) {
        return (int)GetLastError();
    }
    if (size == 0) {
        MEMORY_BASIC_INFORMATION info;
        if (VirtualQuery(p, &info, sizeof(info)) == 0) {
            int err = (int)GetLastError();
            UnmapViewOfFile(p);
            return err;
        }
        size = info.RegionSize;
    }
    m->addr = (char *)p;
    m->size = size;
    m->handle = h;
    return 0;
}

int
cmp_shm_segment_open(const char *name, int flags, int mode, size_t truncate_to,
                     cmp_mapping *m, int *created)
{
    wchar_t *wname = NULL;
    HANDLE h;
    int err;
    size_t size = truncate_to;
    (void)mode;

    m->addr = NULL;
    m->size = 0;
    m->handle = CMP_INVALID_HANDLE;
    *created = 0;
    err = wide_name(name, &wname);
    if (err) {
        return err;
    }
    if ((flags & O_CREAT) && truncate_to > 0) {
        unsigned long long n = (unsigned long long)truncate_to;
        h = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE,
                               (DWORD)(n >> 32), (DWORD)(n & 0xFFFFFFFFu),
                               wname);
        err = h == NULL ? (int)GetLastError() : 0;
        if (h != NULL && GetLastError() == ERROR_ALREADY_EXISTS) {
            if (flags & O_EXCL) {
                CloseHandle(h);
                h = NULL;
                err = ERROR_ALREADY_EXISTS;
            }
            else {
                size = 0; /* attach: the existing size counts */
            }
        }
        else if (h != NULL) {
            *created = 1;
        }
    }
    else {
        h = OpenFileMappingW(FILE_MAP_ALL_ACCESS, FALSE, wname);
        err = h == NULL ? (int)GetLastError() : 0;
        size = 0;
    }
    free(wname);
    if (err) {
        return err;
    }
    err = map_view(h, size, m);
    if (err) {
        CloseHandle(h);
        *created = 0;
    }
    return err;
}

int
cmp_shm_segment_close(cmp_mapping *m)
{
    int err = 0;
    if (m->addr != NULL) {
        if (!UnmapViewOfFile(m->addr)) {
            err = (int)GetLastError();
        }
        m->addr = NULL;
    }
    if (m->handle != CMP_INVALID_HANDLE) {
        if (!CloseHandle(m->handle) && err == 0) {
            err = (int)GetLastError();
        }
        m->handle = CMP_INVALID_HANDLE;
    }
    return err;
}

int
cmp_shm_open_fd(const char *name, int flags, int mode, cmp_handle_t *fd)
{
    (void)name;
    (void)flags;
    (void)mode;
    (void)fd;
    /* Named segments have no descriptor on Windows. */
    return ERROR_NOT_SUPPORTED;
}

int
cmp_shm_unlink(const char *name)
{
    (void)name;
    /* The mapping goes away with its last handle. */
    return 0;
}

int
cmp_arena_create(size_t size, cmp_mapping *m)
{
    unsigned long long n = (unsigned long long)size;
    if (size == 0) {
        return ERROR_INVALID_PARAMETER;
    }
    HANDLE h = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE,
                                  (DWORD)(n >> 32), (DWORD)(n & 0xFFFFFFFFu),
                                  NULL);
    if (h == NULL) {
        return (int)GetLastError();
    }
    int err = map_view(h, size, m);
    if (err) {
        CloseHandle(h);
    }
    return err;
}

int
cmp_arena_attach(cmp_handle_t handle, size_t size, cmp_mapping *m)
{
    if (size == 0) {
        return ERROR_INVALID_PARAMETER;
    }
    return map_view(handle, size, m);
}

int
cmp_arena_release(cmp_mapping *m)
{
    return cmp_shm_segment_close(m);
}

unsigned long
cmp_fork_epoch(void)
{
    return 0; /* no fork on Windows */
}
#endif /* CMP_WINDOWS */
