/*
 * queue.h -- private declarations shared by the files of the queue:
 *
 *   queue_codec.c   a message as it goes into the pipe (qframe): the
 *                   direct pickle encodings, the frame header, and reading
 *                   one message back
 *   queue_feeder.c  QueueFeed: the frames this process still has to write
 *                   and the feeder thread's loop; the calls into the locks
 *   queue.c         QueueBase: put/get, SimpleQueue's, _bind
 *
 * Wire format: the stdlib's Connection framing (frame.c), so the queue's
 * _reader and _writer stay usable as Connections.  The payload is a
 * pickle: ForkingPickler's (the kept one of pickler.c, or dumps()) in
 * general, or, for exact None/bool/int/float/bytes/str, the equivalent
 * pickle opcodes written directly (readable by any pickle.loads); get()
 * recognises exactly those encodings and decodes them without pickle.
 */
#ifndef CMP_QUEUE_H
#define CMP_QUEUE_H

#include "cmp.h"
#include "frame.h"
#include "robust.h"
#include "semlock.h"
#include "spin.h"

/* A queue's ring (ring.h) as a process holds it: the mapping stays
   valid while `view` is held (the heap block's buffer). */
typedef struct {
    cmp_ring ring;
    Py_buffer view;
    int attached;
} qring;

/* Attach to the ring in block (an object with a writable buffer), or to
   none when block is None.  0 or -1. */
int qring_attach(qring *r, PyObject *block);
void qring_release(qring *r);
static inline cmp_ring *
qring_get(qring *r)
{
    return r->attached ? &r->ring : NULL;
}

/* Frames no longer than this are written by one system call or not at
   all (the POSIX minimum of PIPE_BUF). */
#define QUEUE_ATOMIC_WRITE 512
/* At most this many bytes per gathered write of the feeder.  The feeder
   needs the GIL between two writes, and waits for it up to the switch
   interval (5 ms) while the thread that puts is busy: each write should
   keep the reader busy for about as long.  Pieces of frames up to
   FEED_COALESCE bytes are copied into a staging buffer of
   FEED_STAGE_BYTES, so that one write carries thousands of small
   messages (else the 64 pieces of a write would be 21 messages). */
#define FEED_BATCH_BYTES (16 << 20)
#define FEED_COALESCE 1024
#define FEED_STAGE_BYTES (128 << 10)
/* Frames at least this long are read in two steps so that a bytes
   payload lands directly in its final object. */
#define QUEUE_DIRECT_READ 1024
/* The first frame at least this long makes the producer ask for a pipe
   buffer of QUEUE_PIPE_WANT bytes: with the default 64 KiB a 64 KiB
   message does not fit, and every message costs the writer and the reader
   a sleep and a wake-up each.  Queues of small messages keep the default
   (the kernel counts pipe buffers against a per-user budget). */
#define QUEUE_GROW_AT (16 << 10)
#define QUEUE_PIPE_WANT (1 << 20)
/* The kernel counts pipe buffers against a per-user budget
   (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by default); past it, every
   new pipe of the user gets a 8 KiB buffer.  So the queues of one process
   grow their pipes by QUEUE_GROW_BUDGET at most in all, given back when
   a queue object goes away (a C integer, not a Python object: it is the
   process's budget, whatever the interpreter; cmp_process_lock() guards
   it, interpreters with a GIL of their own sharing it). */
#define QUEUE_GROW_BUDGET ((size_t)16 << 20)
/* How long (seconds) a put() waits for room in a full ring whose reader
   takes nothing, before it hands the frame to the feeder thread (queue.c's
   wait_for_room). */
#define QUEUE_PUT_WAIT 0.002
/* ... and while the machine is oversubscribed (spin.h's
   cmp_spin_crowded), where a reader or a lock holder that does not move
   is most often one the scheduler has not run yet: a time slice or two. */
#define QUEUE_PUT_WAIT_CROWDED 0.02

/* How long put() waits for room or for the writer lock before it hands
   the frame to the feeder thread (see above). */
static inline double
queue_put_wait(void)
{
    return cmp_spin_crowded() ? QUEUE_PUT_WAIT_CROWDED : QUEUE_PUT_WAIT;
}
/* The feeder re-checks its state at least this often (microseconds). */
#define FEED_IDLE_US 500000

/* One message as it goes into the pipe: pre (frame header and pickle
   prefix), data (borrowed from owner), post (pickle STOP or nothing). */
typedef struct {
    unsigned char pre[28];
    unsigned char post[1];
    unsigned char npre, npost;
    const char *data;
    Py_ssize_t ndata;
    PyObject *owner;   /* keeps data alive; NULL when data is NULL */
    Py_buffer view;    /* when has_view: data is view.buf */
    int has_view;
    int holds_wlock;   /* a partial write left the writer lock held */
    PyObject *obj;     /* the object put, for the error hook */
    Py_ssize_t done;   /* bytes of the frame already in the pipe */
} qframe;

/* ---- queue_codec.c ---- */

Py_ssize_t qframe_total(const qframe *f);
void qframe_clear(qframe *f);

/* Fill f for obj: directly, through pickle.dumps() for plain containers,
   or through the queue's pickler (the kept one, or dumps()).  -1 with an
   exception set when the object cannot be pickled (f is then cleared). */
int qframe_encode(cmp_state *st, PyObject *kept, PyObject *dumps,
                  PyObject *obj, qframe *f);

/* The unwritten rest of f as up to 3 pieces; pre/post are copied into
   `scratch` (at least 29 bytes) because f may move. */
int qframe_pieces(const qframe *f, cmp_iobuf *out, unsigned char *scratch);

/* Read one message from the shared pipe end w: 0 with either *obj (a
   directly decoded object) or *payload (a pickle, for the caller to
   load once the reader lock is released) set, or -1 with an exception
   set. */
int qcodec_read(cmp_wire *w, PyObject **obj, PyObject **payload);

/* ---- queue_feeder.c ---- */

/* One of the queue's locks as the queue calls it: the lock's bound
   acquire and release, and, where they are the package's own SemLock's
   methods, that SemLock (borrowed from the method), called without the
   methods -- resolved once, by qlock_bind(), rather than at every call. */
typedef struct {
    PyObject *acquire, *release; /* NULL: no such lock */
    SemLockObject *take, *give;  /* their native SemLock, or NULL */
} qlock;

/* A pipe end as the queue reads its handle: its bound fileno(), and the
   Connection itself (borrowed from the method) where that is the
   package's own Connection.fileno. */
typedef struct {
    PyObject *fileno;
    PyObject *native;
} qconn;

typedef struct {
    PyObject_HEAD
    qframe *ring; /* circular, `cap` slots, `count` used from `first` */
    Py_ssize_t cap, first, count;
    PyObject *writer; /* Connection */
    qconn w;  /* its handle */
    qlock wl; /* the writer lock; wl.acquire NULL: none */
    cmp_owner_rec *wrec; /* the writer lock's owner record, or NULL
                            (queue_robust.c; alive with wl.acquire) */
    PyObject *failed_obj; /* object of the frame the last error dropped */
    PyThread_type_lock wake;
    /* Hand-over of the GIL from a thread that puts to the feeder: the
       feeder sets wants_gil (without the GIL) when a write is done and it
       waits for the GIL; a put() that sees it lets go of the GIL and waits
       on `handover` (held = nothing to report) until the feeder, with the
       GIL, releases it -- instead of the feeder waiting out the switch
       interval (5 ms) while the reader runs dry.  handover_waiting is only
       touched with the GIL held. */
    PyThread_type_lock handover;
    volatile int wants_gil;
    int handover_waiting;
    unsigned char *stage; /* FEED_STAGE_BYTES for one write, or NULL */
    int sleeping, wake_posted, stop, started, writing;
    int used; /* put() was called with this feed */
    qring shm; /* the queue's shared-memory ring, for the feeder */
    int counted; /* the queue counts its messages in the ring */
} FeedObject;

/* *l from a lock object's acquire and release (None: no lock; *l is
   left empty).  0, or -1 with an exception set (*l left empty). */
int qlock_bind(qlock *l, PyObject *lock);
void qlock_clear(qlock *l);
/* acquire(block[, timeout]); 1 acquired, 0 not, -1 error. */
int qlock_take(const qlock *l, int block, PyObject *timeout);
/* Acquire, waiting at most `seconds`: 1, 0 or -1. */
int qlock_take_briefly(const qlock *l, double seconds);
/* release(): 0 or -1. */
int qlock_give(const qlock *l);
/* release() with an exception pending: keep the first exception. */
void qlock_give_keeping_error(const qlock *l);
/* *c from a Connection (or anything with fileno()): 0 or -1. */
int qconn_bind(qconn *c, PyObject *conn);
/* The handle behind it now (a closed Connection raises, as the stdlib's
   does): 0 or -1. */
int qconn_handle(const qconn *c, cmp_handle_t *out);

int feed_push(FeedObject *fd, qframe *f);
void feed_hand_over(FeedObject *fd);
int queue_feeder_exec(PyObject *module);

/* ---- queue.c ---- */

typedef struct {
    PyObject_HEAD
    cmp_state *st;
    FeedObject *feed;
    PyObject *reader; /* Connection */
    qconn r;  /* its handle */
    qlock rl; /* the reader lock */
    /* The locks' owner records, or NULL (queue_robust.c): the reader's
       (bytes of a message left to read) and the writers' (whether the
       stream may be cut), with the writer lock's semaphore; alive with
       rl.acquire and feed->wl.acquire. */
    cmp_owner_rec *rrec, *wrec;
    cmp_sem_t wsem;
    qlock sem; /* the size semaphore; sem.acquire NULL: none */
    PyObject *dumps, *loads;
    PyObject *kept; /* the kept ForkingPickler (pickler.c), or NULL */
    int closed, ignore_epipe;
    int counted; /* no size semaphore: messages counted in the ring
                    (ring.h's cmp_ring_count_puts) */
    int pipe_grown; /* this process asked for the larger pipe buffer */
    size_t pipe_growth; /* what it counts against pipe_growth_held */
    cmp_spin spin; /* before sleeping for the next message (spin.h) */
    cmp_spin wspin; /* before sleeping for room in the ring */
    qring shm; /* the shared-memory ring (ring.h), when attached */
} QueueObject;

/* ---- queue_robust.c ---- */

/* Writer, holding the writer lock just taken: when the holder before left
   the stream in the middle of a message (it died, or its write failed),
   wait until a reader has settled the stream.  0, or -1 with an exception
   (a signal handler raised). */
int qrobust_write_settle(cmp_owner_rec *wrec);
/* Writer: a write that may be cut off (longer than QUEUE_ATOMIC_WRITE)
   begins; and the stream is at a message boundary again (before the
   writer lock is released). */
void qrobust_write_mark(cmp_owner_rec *wrec);
void qrobust_write_end(cmp_owner_rec *wrec);
/* Reader, holding the reader lock just taken: drop what is left of a
   message whose reader died (or gave up) half-way.  0 or -1. */
int qrobust_read_resume(QueueObject *q, cmp_wire *w);
/* The reader's cmp_wire_stalled (ctx: the QueueObject): settles a stream
   that a writer left cut, raising TornMessageError for the message it
   cut. */
int qrobust_stalled(void *ctx, int mid_message);
/* Reader, holding the reader lock, before the ring's bytes are moved into
   the pipe: a ring position in the reader lock's record becomes the count
   of bytes left (frame.h's CMP_WIRE_LEFT_AT). */
void qrobust_left_as_count(QueueObject *q);
/* Whether the message under way will never be finished: its writer is
   gone, or the stream waits to be settled.  1 or 0. */
int qrobust_writer_stuck(QueueObject *q);

#endif /* CMP_QUEUE_H */
