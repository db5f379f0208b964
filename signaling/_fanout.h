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

/* Prefetching: a flush and a broadcast reach each recipient cold in memory, and their
 * loops ask for the objects of the recipient FANOUT_AHEAD places on before they need
 * them (a hint only: a stale guess costs nothing but time). A socket object spans about
 * FANOUT_OBJECT_LINES cache lines, a uvloop transport about FANOUT_TRANSPORT_LINES. */
#define FANOUT_AHEAD 4
#define FANOUT_OBJECT_LINES 3
#define FANOUT_TRANSPORT_LINES 6

static inline void fanout_prefetch(const void *p, int lines) {
    if (p == NULL)
        return;
    for (int k = 0; k < lines; k++)
        __builtin_prefetch((const char *)p + 64 * k);
}

/* Where a ``__slots__`` attribute (``*name``) sits in objects of the last type asked
 * about, found through its member descriptor and kept until the type changes. */
struct fanout_slot {
    PyObject **name;
    PyTypeObject *type;
    unsigned int version;
    Py_ssize_t offset;
};

/* What ``obj``'s slot holds (borrowed; NULL if the attribute is not such a slot), to
 * prefetch and never to use: the slot's descriptor may have been shadowed. */
PyObject *fanout_slot_value(struct fanout_slot *slot, PyObject *obj);

/* The module functions of _broadcast.c, and its set-up (interned names): 0 or -1. */
PyObject *fanout_broadcast(PyObject *self, PyObject *args);
PyObject *fanout_queue(PyObject *self, PyObject *args);
PyObject *fanout_direct_written(PyObject *self, PyObject *unused);
int fanout_broadcast_init(void);

/* The module functions of _arenas.c: Python's object arenas on huge pages. */
PyObject *fanout_huge_arenas(PyObject *self, PyObject *unused);
PyObject *fanout_huge_arena_count(PyObject *self, PyObject *unused);

#endif
