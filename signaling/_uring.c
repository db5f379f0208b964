/* The fan-out's sends through io_uring: one ``io_uring_enter`` for all the ``send``s of a
 * loop iteration's flush instead of one system call each.
 *
 * Why: a broadcast to a room of fifty is fifty sends of a small frame, each after an idle
 * gap, and on loopback (the benchmark's) each carries the receiver's TCP path too. A C
 * sender with 48 loopback peers, 500 broadcasts a second, spent 5.2 to 6.4 µs of CPU per
 * send as its own system call and 3.1 to 4.2 µs as an entry of one submission (the whole
 * machine: 11.6 against 10.0 µs per message; the receivers took part of what the sender
 * no longer did). In the node under the fan-out benchmark at 24.5k deliveries a second,
 * the flush measured per client while alternating the two every 500 flushes: 6.75 against
 * 6.07 µs on ``/socket.io/``, 6.65 against 6.20 µs on ``/ws``. The ring is raw system
 * calls on the kernel's ABI (``<linux/io_uring.h>``), so building needs no library.
 *
 * Every send carries MSG_DONTWAIT, which makes io_uring complete it with -EAGAIN instead
 * of parking it until the socket is writable: each one has run, whole, partly or not at
 * all, when ``io_uring_enter`` returns, exactly like the ``send`` it replaces (one that
 * a kernel parked anyway is cancelled: ``cancel_parked``). Nothing is left in flight
 * between flushes, so the caller's buffers need to live only for the call. There is no
 * submission thread (SQPOLL): the kernel reads the ring only inside ``io_uring_enter``, on
 * the caller's thread, under the caller's GIL.
 */
#define _GNU_SOURCE
#include "_uring.h"

#include <errno.h>
#include <pthread.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sends the kernel took without finishing them at once (see cancel_parked). */
static unsigned long parked = 0;

/* Marks a cancel's completion apart from the sends'. */
#define CANCEL_TAG (1ULL << 63)

static struct {
    int fd;  /* -1 not set up, -2 unavailable */
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *rings;
    size_t rings_len, sqes_len;
    unsigned pending; /* entries queued since the last run */
} ring = {.fd = -1};

static void teardown(void) {
    if (ring.rings != NULL)
        munmap(ring.rings, ring.rings_len);
    if (ring.sqes != NULL)
        munmap(ring.sqes, ring.sqes_len);
    if (ring.fd >= 0)
        close(ring.fd);
    ring.rings = NULL;
    ring.sqes = NULL;
    ring.fd = -1;
}

static int setup(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    /* SUBMIT_ALL: a bad entry does not stop the rest; COOP_TASKRUN: no interrupting the
     * thread to post completions (ours are posted inline anyway). Both are 5.19+. */
    p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    int fd = (int)syscall(__NR_io_uring_setup, URING_BATCH, &p);
    if (fd < 0 && errno == EINVAL) {
        memset(&p, 0, sizeof p);
        fd = (int)syscall(__NR_io_uring_setup, URING_BATCH, &p);
    }
    if (fd < 0)
        return 0;
    ring.fd = fd;
    /* FAST_POLL (5.7) implies IORING_OP_SEND (5.6) and the ring layout used here */
    if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_FAST_POLL)) {
        teardown();
        return 0;
    }
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    ring.rings_len = sq_len > cq_len ? sq_len : cq_len;
    ring.rings = mmap(NULL, ring.rings_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                      fd, IORING_OFF_SQ_RING);
    if (ring.rings == MAP_FAILED) {
        ring.rings = NULL;
        teardown();
        return 0;
    }
    ring.sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    ring.sqes = mmap(NULL, ring.sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                     IORING_OFF_SQES);
    if (ring.sqes == MAP_FAILED) {
        ring.sqes = NULL;
        teardown();
        return 0;
    }
    char *base = ring.rings;
    ring.sq_head = (unsigned *)(base + p.sq_off.head);
    ring.sq_tail = (unsigned *)(base + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(base + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(base + p.sq_off.array);
    ring.cq_head = (unsigned *)(base + p.cq_off.head);
    ring.cq_tail = (unsigned *)(base + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(base + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(base + p.cq_off.cqes);
    for (unsigned i = 0; i < p.sq_entries; i++)
        ring.sq_array[i] = i; /* slot i of the ring is always SQE i */
    ring.pending = 0;
    return 1;
}

/* A forked child must not submit to its parent's ring: it makes its own on first use. */
static void forked(void) {
    if (ring.fd >= 0)
        teardown();
}

int uring_ready(void) {
    static int hooked = 0;
    if (!hooked) {
        hooked = 1;
        pthread_atfork(NULL, NULL, forked);
    }
    if (ring.fd == -2)
        return 0;
    if (ring.fd == -1 && !setup()) {
        ring.fd = -2;
        return 0;
    }
    return 1;
}

void uring_queue_send(unsigned index, int fd, const void *data, size_t size) {
    unsigned tail = *ring.sq_tail + ring.pending;
    struct io_uring_sqe *sqe = &ring.sqes[tail & *ring.sq_mask];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)data;
    sqe->len = (uint32_t)size;
    sqe->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    sqe->user_data = index;
    ring.pending++;
}

/* Take the completions there are; returns how many. */
static unsigned reap(int *results) {
    unsigned head = *ring.cq_head, got = 0;
    unsigned tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
    for (; head != tail; head++, got++) {
        struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
        if (!(cqe->user_data & CANCEL_TAG))
            results[cqe->user_data] = cqe->res;
    }
    __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    return got;
}

/* A send the kernel took but did not finish: parked until its socket is writable, which
 * non-blocking sends are not on the kernels this was written on. Should one be, it is
 * cancelled (a cancelled send sent nothing and is the caller's again) rather than waited
 * for, so no buffer is released, and no byte sent twice, while the kernel may still use
 * it, and the caller never blocks on a client's socket. */
static void cancel_parked(unsigned taken, int *results) {
    unsigned missing = 0, tail = *ring.sq_tail;
    for (unsigned i = 0; i < taken; i++) {
        if (results[i] != URING_NOT_RUN)
            continue;
        struct io_uring_sqe *sqe = &ring.sqes[(tail + missing) & *ring.sq_mask];
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_ASYNC_CANCEL;
        sqe->addr = i;
        sqe->user_data = CANCEL_TAG | i;
        missing++;
    }
    __atomic_store_n(ring.sq_tail, tail + missing, __ATOMIC_RELEASE);
    /* each cancel and each send it ends complete: 2 per missing one */
    unsigned want = 2 * missing, got = 0, guard = 0;
    while (got < want && guard++ < 1000) {
        unsigned waiting = tail + missing - __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
        long r = syscall(__NR_io_uring_enter, ring.fd, waiting, want - got,
                         IORING_ENTER_GETEVENTS, NULL, 0);
        got += reap(results);
        if (r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY)
            break;
    }
    for (unsigned i = 0; i < taken; i++)
        if (results[i] == -ECANCELED)
            results[i] = URING_NOT_RUN;
}

void uring_run(unsigned count, int *results) {
    for (unsigned i = 0; i < count; i++)
        results[i] = URING_NOT_RUN;
    unsigned start = *ring.sq_tail, tail = start + ring.pending;
    ring.pending = 0;
    __atomic_store_n(ring.sq_tail, tail, __ATOMIC_RELEASE);
    /* Submit without waiting for completions: a send done inline has posted its
     * completion when the call returns, and one the kernel parked must not hold this
     * thread (it is cancelled below). */
    for (int attempt = 0; attempt < 8; attempt++) {
        unsigned waiting = tail - __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE);
        if (waiting == 0)
            break;
        long r = syscall(__NR_io_uring_enter, ring.fd, waiting, 0, 0, NULL, 0);
        if (r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY)
            break;
    }
    unsigned done = reap(results);
    /* What the kernel did not take is taken back (it reads the ring only inside
     * io_uring_enter): those sends stay URING_NOT_RUN and the caller sends them itself. */
    unsigned taken = __atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE) - start;
    __atomic_store_n(ring.sq_tail, start + taken, __ATOMIC_RELEASE);
    if (done < taken) {
        parked += taken - done;
        cancel_parked(taken, results);
    }
}

unsigned long uring_parked(void) {
    return parked;
}
