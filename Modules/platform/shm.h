/* platform/shm.h -- OS layer for shared memory: named segments (the POSIX
 * shm_open family, or named file mappings on Windows) and the anonymous,
 * inheritable arenas of the heap.
 *
 * Every function returns 0 or a platform error code and never touches
 * Python objects, so callers may run them with the GIL released.
 */
#ifndef CMP_PLATFORM_SHM_H
#define CMP_PLATFORM_SHM_H

/* A mapping of a segment or an arena: where it is, how long, and the handle
   that keeps it nameable (an fd on POSIX, a file-mapping handle on
   Windows). */
typedef struct {
    char *addr;
    size_t size;
    cmp_handle_t handle;
} cmp_mapping;

/* The system's page size (cached after the first call). */
size_t cmp_shm_page_size(void);

/* Open the named segment `name` (with its leading '/' on POSIX) with the
   os.O_* `flags` and permission `mode`.  When `truncate_to` > 0 the segment
   is first resized to that many bytes (a new segment); otherwise its current
   size is read.  The whole segment is then mapped read-write and shared.
   On success *created tells whether this call made the name exist (only
   known for O_CREAT|O_EXCL; 0 otherwise).  On a failure after the name was
   created the name is removed again.  CMP_EMPTY (platform.h) means the
   segment exists but is empty (nothing to map). */
int cmp_shm_segment_open(const char *name, int flags, int mode,
                         size_t truncate_to, cmp_mapping *m, int *created);

/* Unmap a segment and close its handle (both steps are tried; the first
   error is returned). */
int cmp_shm_segment_close(cmp_mapping *m);

/* shm_open(3) alone: *fd receives a descriptor that is not inherited by
   exec'd programs. */
int cmp_shm_open_fd(const char *name, int flags, int mode, cmp_handle_t *fd);

/* Remove a segment's name (shm_unlink(3)).  ENOENT when there is none. */
int cmp_shm_unlink(const char *name);

/* A new arena of `size` bytes (a multiple of the page size): anonymous
   shared memory reachable through m->handle, so that the handle can be
   passed to a spawned child, which maps it with cmp_arena_attach(). */
int cmp_arena_create(size_t size, cmp_mapping *m);

/* Map `size` bytes of an arena received from a parent; takes ownership of
   `handle` on success. */
int cmp_arena_attach(cmp_handle_t handle, size_t size, cmp_mapping *m);

/* Unmap an arena and close its handle. */
int cmp_arena_release(cmp_mapping *m);

/* A counter that changes in a child process after every fork(), so that
   data structures inherited by the child can tell they must reset. */
unsigned long cmp_fork_epoch(void);

#endif
