/* What the flush of the outboxes (signaling/_fanout.c) and a room's broadcast written at
 * once (signaling/_broadcast.c) share: the batch of sends in the io_uring ring and how
 * one send is finished. */
#ifndef SIGNALING_FANOUT_H
#define SIGNALING_FANOUT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_uring.h"

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
 * transport. 0, or -1 with an exception set. */
int fanout_finish(PyObject *box, PyObject *wire, PyObject *data, Py_ssize_t n);

/* One non-blocking send of ``data`` on ``fd``: bytes taken, or -1. */
Py_ssize_t fanout_send_now(int fd, PyObject *data);

/* The module functions of _broadcast.c, and its set-up (interned names): 0 or -1. */
PyObject *fanout_broadcast(PyObject *self, PyObject *args);
PyObject *fanout_direct_written(PyObject *self, PyObject *unused);
int fanout_broadcast_init(void);

#endif
