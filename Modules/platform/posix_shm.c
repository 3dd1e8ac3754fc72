/* platform/posix_shm.c -- shared memory on POSIX systems (Linux, macOS):
   shm_open segments and memfd (or unlinked temporary file) arenas. */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE 1 /* fallocate(2) */
#endif
#include "platform/platform.h"
#include "platform/darwin.h"

#ifdef CMP_POSIX
#  include <errno.h>
#  include <fcntl.h>
#  include <pthread.h>
#  include <stdio.h>
#  include <stdlib.h>
#  include <string.h>
#  include <sys/mman.h>
#  include <sys/stat.h>
#  ifdef __linux__
#    include <sys/statvfs.h>
#  endif
#  include <unistd.h>

size_t
cmp_shm_page_size(void)
{
    static size_t cached;
    if (cached == 0) {
        long n = sysconf(_SC_PAGESIZE);
        cached = n > 0 ? (size_t)n : 4096;
    }
    return cached;
}

static int
close_keeping_errno(int fd)
{
    int saved = errno;
    (void)close(fd);
    errno = saved;
    return saved;
}

/* Give the first `size` bytes of fd their memory now.  A segment or arena
   lives in a memory-backed file system (/dev/shm, or memfd's); sized with
   ftruncate alone, its pages are found on first touch, and a page the file
   system cannot supply then kills the process with SIGBUS.  Reserved here,
   the lack shows as ENOSPC (ENOMEM under a memory cgroup's limit) at
   creation instead.  Linux only: macOS's shared memory objects and
   Windows's mappings are committed when made.  Where the file system
   cannot preallocate (EOPNOTSUPP) the pages stay lazy, as before. */
static int
reserve(int fd, size_t size)
{
#  ifdef __linux__
    int r;
    do {
        r = fallocate(fd, 0, 0, (off_t)size);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EOPNOTSUPP && errno != ENOSYS) {
        return errno;
    }
#  else
    (void)fd;
    (void)size;
#  endif
    return 0;
}

#  ifndef CMP_DARWIN /* (macOS sizes its objects in darwin_shm.c) */
/* A named segment's memory: refused (ENOSPC) at once when the file system
   has less room than `size`, reserved when it takes more than a quarter of
   the room (then another process filling the rest meanwhile is a real
   risk), left to the first touch otherwise.  Reserving costs about 1 us a
   page (64 KiB: 27 us -> 50 us for a create+unlink), which the first
   writes save again, but a segment that is made and hardly written does
   not; so small segments in a roomy /dev/shm stay lazy, and can fault
   only if others fill it in the meantime. */
static int
reserve_segment(int fd, size_t size)
{
#    ifdef __linux__
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) == 0 && vfs.f_frsize > 0) {
        uint64_t room = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
        if ((uint64_t)size > room) {
            return ENOSPC;
        }
        if ((uint64_t)size <= room / 4) {
            return 0;
        }
    }
#    endif
    return reserve(fd, size);
}
#  endif

/* Map `size` bytes of `fd` read-write and shared, into *m (which then
   owns fd); *m is left as it is on an error. */
static int
map_shared(int fd, size_t size, cmp_mapping *m)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        return errno;
    }
    m->addr = (char *)p;
    m->size = size;
    m->handle = fd;
    return 0;
}

int
cmp_shm_open_fd(const char *name, int flags, int mode, cmp_handle_t *fd)
{
    int r;
    do {
        r = shm_open(name, flags, (mode_t)mode);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        return errno;
    }
#  ifndef __linux__
    /* glibc opens with O_CLOEXEC itself; other systems may not. */
    int fdflags = fcntl(r, F_GETFD);
    if (fdflags >= 0 && !(fdflags & FD_CLOEXEC)) {
        (void)fcntl(r, F_SETFD, fdflags | FD_CLOEXEC);
    }
#  endif
    *fd = r;
    return 0;
}

int
cmp_shm_unlink(const char *name)
{
    return shm_unlink(name) < 0 ? errno : 0;
}

int
cmp_shm_segment_open(const char *name, int flags, int mode, size_t truncate_to,
                     cmp_mapping *m, int *created)
{
    int fd = -1, err;
    size_t size = truncate_to;

    m->addr = NULL;
    m->size = 0;
    m->handle = -1;
    *created = 0;
    err = cmp_shm_open_fd(name, flags, mode, &fd);
    if (err) {
        return err;
    }
    *created = (flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL);
    if (truncate_to > 0) {
        if ((off_t)truncate_to < 0) {
            err = EFBIG;
            goto error;
        }
#  ifdef CMP_DARWIN
        /* (macOS sizes a shared memory object once only) */
        err = cmp_darwin_shm_resize(fd, truncate_to);
        if (err) {
            goto error;
        }
#  else
        while (ftruncate(fd, (off_t)truncate_to) < 0) {
            if (errno != EINTR) {
                err = errno;
                goto error;
            }
        }
        err = reserve_segment(fd, truncate_to);
        if (err) {
            goto error;
        }
#  endif
    }
    else {
        struct stat st;
        if (fstat(fd, &st) < 0) {
            err = errno;
            goto error;
        }
        size = (size_t)st.st_size;
        if (size == 0) {
            err = CMP_EMPTY;
            goto error;
        }
    }
    err = map_shared(fd, size, m);
    if (err) {
        goto error;
    }
    return 0;

error:
    (void)close_keeping_errno(fd);
    if (*created) {
        (void)shm_unlink(name);
        *created = 0;
    }
    return err;
}

int
cmp_shm_segment_close(cmp_mapping *m)
{
    int err = 0;
    if (m->addr != NULL) {
        if (munmap(m->addr, m->size) < 0) {
            err = errno;
        }
        m->addr = NULL;
    }
    if (m->handle >= 0) {
        /* After close() the descriptor is gone even on EINTR. */
        if (close(m->handle) < 0 && errno != EINTR && err == 0) {
            err = errno;
        }
        m->handle = -1;
    }
    return err;
}

/* An fd for `size` bytes of anonymous memory that no name reaches. */
static int
anonymous_fd(int *out)
{
    int fd = -1;
#  if defined(__linux__) && defined(MFD_CLOEXEC)
    fd = memfd_create("cmp-arena", MFD_CLOEXEC);
    if (fd >= 0) {
        *out = fd;
        return 0;
    }
    if (errno != ENOSYS && errno != EPERM) {
        return errno;
    }
#  endif
#  ifdef CMP_DARWIN
    /* macOS: an unlinked POSIX shared memory object */
    if (cmp_darwin_shm_anonymous(out) == 0) {
        return 0;
    }
#  endif
    /* No memfd: a temporary file, removed at once, in a memory-backed
       directory where there is one. */
    const char *dirs[3] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    int err = ENOENT;
    for (int i = 0; i < 3; i++) {
        char path[4096];
        if (dirs[i] == NULL || dirs[i][0] == '\0') {
            continue;
        }
        int n = snprintf(path, sizeof(path), "%s/cmp-arena-XXXXXX", dirs[i]);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            continue;
        }
        fd = mkstemp(path);
        if (fd < 0) {
            err = errno;
            continue;
        }
        (void)unlink(path);
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        *out = fd;
        return 0;
    }
    return err;
}

int
cmp_arena_create(size_t size, cmp_mapping *m)
{
    int fd, err;
    if ((off_t)size <= 0) {
        return EINVAL;
    }
    err = anonymous_fd(&fd);
    if (err) {
        return err;
    }
    while (ftruncate(fd, (off_t)size) < 0) {
        if (errno != EINTR) {
            return close_keeping_errno(fd);
        }
    }
    err = reserve(fd, size);
    if (!err) {
        err = map_shared(fd, size, m);
    }
    if (err) {
        (void)close(fd);
    }
    return err;
}

int
cmp_arena_attach(cmp_handle_t handle, size_t size, cmp_mapping *m)
{
    struct stat st;
    if (size == 0) {
        return EINVAL;
    }
    if (fstat(handle, &st) < 0) {
        return errno;
    }
    if ((size_t)st.st_size < size) {
        /* Mapping past the end would fault on first touch. */
        return EINVAL;
    }
    return map_shared(handle, size, m);
}

int
cmp_arena_release(cmp_mapping *m)
{
    return cmp_shm_segment_close(m);
}

/* Fork detection: a counter bumped by a pthread_atfork child handler.
   Only an integer store happens in the child, which is async-signal-safe. */
static volatile unsigned long fork_epoch;
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;

static void
bump_fork_epoch(void)
{
    fork_epoch++;
}

static void
install_fork_hook(void)
{
    (void)pthread_atfork(NULL, NULL, bump_fork_epoch);
}

unsigned long
cmp_fork_epoch(void)
{
    (void)pthread_once(&fork_hook_once, install_fork_hook);
    return fork_epoch;
}
#endif /* CMP_POSIX */
