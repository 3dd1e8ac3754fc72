/* platform/darwin_io.c -- macOS: writes that give EPIPE, not SIGPIPE
 * (platform/darwin.h).
 */
#include "platform/darwin.h"

#ifdef CMP_DARWIN
#  include <errno.h>
#  include <fcntl.h>
#  include <sys/socket.h>

int
cmp_darwin_nosigpipe(int fd)
{
#  ifdef F_SETNOSIGPIPE
    if (fcntl(fd, F_SETNOSIGPIPE, 1) == 0) {
        return 0;
    }
    if (errno == EBADF) {
        return errno;
    }
#  endif
    /* older systems: the socket option (sockets only) */
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on)) == 0) {
        return 0;
    }
    return errno;
}

#endif /* CMP_DARWIN */
