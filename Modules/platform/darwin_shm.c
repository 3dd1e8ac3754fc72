/* platform/darwin_shm.c -- macOS: shared memory objects for heap arenas,
 * and their one-time sizing (platform/darwin.h).
 */
#include "platform/darwin.h"

#ifdef CMP_DARWIN
#  include <errno.h>
#  include <fcntl.h>
#  include <stdio.h>
#  include <sys/mman.h>
#  include <sys/stat.h>
#  include <unistd.h>

int
cmp_darwin_shm_anonymous(int *out)
{
    static volatile unsigned int serial;
    char name[CMP_DARWIN_SHM_NAME_MAX + 1];
    int err = EEXIST;

    /* "/cmpa-" + pid + "-" + counter: 6 + 10 + 1 + 10 < 31 bytes.  A name
       left by someone else (EEXIST) just means: next number. */
    for (int attempt = 0; attempt < 64 && err == EEXIST; attempt++) {
        unsigned int n = __atomic_add_fetch(&serial, 1, __ATOMIC_RELAXED);
        snprintf(name, sizeof(name), "/cmpa-%ld-%u", (long)getpid(), n);
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0) {
            err = errno;
            if (err == EINTR) {
                err = EEXIST;   /* (try again with the next name) */
            }
            continue;
        }
        (void)shm_unlink(name);
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        *out = fd;
        return 0;
    }
    return err;
}

int
cmp_darwin_shm_resize(int fd, size_t size)
{
    if ((off_t)size < 0) {
        return EFBIG;
    }
    while (ftruncate(fd, (off_t)size) < 0) {
        int err = errno;
        if (err == EINTR) {
            continue;
        }
        struct stat st;
        if (err == EINVAL && fstat(fd, &st) == 0 &&
            st.st_size >= (off_t)size) {
            return 0;           /* sized before: the size stays */
        }
        return err;
    }
    return 0;
}

#endif /* CMP_DARWIN */
