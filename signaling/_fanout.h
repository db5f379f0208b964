/* What the flush of the outboxes (signaling/_fanout.c) and a room's broadcast written at
 * once (signaling/_broadcast.c) share: the batch of sends in the io_uring ring, how one
 * send is finished, and the per-descriptor idle flags. */
#ifndef SIGNALING_FANOUT_H
#define SIGNALING_FANOUT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_uring.h"

/* Per descriptor, 1 while its connection's outbox is empty: set when a flush sent all
 * of it, cleared when a frame is queued (``hold``) or a send fell short. 0 is always safe
 * (the frame goes through the outbox); 1 is only ever read together with the checks of
 * the connection and its transport themselves (``direct_ok`` in _broadcast.c), so a
 * descriptor reused by a new connection is written to only once that connection's own
 * transport allows it. As many as Linux lets a process open by default (``nr_open``):
 * a megabyte of zeroes, of which only the pages of descriptors in use are ever touched. */
#define IDLE_FDS (1 << 20)
extern unsigned char fanout_idle[IDLE_FDS];

static inline void set_idle(int fd, unsigned char on) {
    if (fd >= 0 && fd < IDLE_FDS)
        fanout_idle[fd] = on;
}

/* One send waiting in the ring, with the references it holds until it is finished. */
struct fanout_send {
    PyObject *box, *wire, *data;
    int fd;
};

/* The sends of one submission; 1 while a flush or a broadcast is filling them. */
extern struct fanout_send fanout_batch[URING_BATCH];
extern int fanout_batch_running;

/* Submit ``count`` queued sends and finish each (releasing its references): 0, or -1
 * with the first error set. */
int fanout_run_batch(unsigned count);

/* After a send took ``n`` of ``data``'s bytes (n <= 0: none): the rest goes to the
 * transport, and the descriptor's idle flag says whether all went. 0, or -1 with an
 * exception set. */
int fanout_finish(PyObject *box, PyObject *wire, PyObject *data, Py_ssize_t n, int fd);

/* One non-blocking send of ``data`` on ``fd``: bytes taken, or -1. */
Py_ssize_t fanout_send_now(int fd, PyObject *data);

/* The module functions of _broadcast.c, and its set-up (interned names): 0 or -1. */
PyObject *fanout_hold(PyObject *self, PyObject *arg);
PyObject *fanout_broadcast(PyObject *self, PyObject *args);
PyObject *fanout_direct_written(PyObject *self, PyObject *unused);
int fanout_broadcast_init(void);

#endif
