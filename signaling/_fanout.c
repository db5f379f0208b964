/* signaling._fanout: the batcher's write of every outbox filled during one loop
 * iteration (signaling/outbox.py), in one C loop.
 *
 * Why: at the loads chat rooms see, each recipient gets about one event per loop
 * iteration, so a broadcast to fifty is fifty writes, each after an idle gap. The system
 * call is the same for any server; what Python adds around it (the loop, attribute reads,
 * uvloop's write method, a buffer-size call) was a third of a node's CPU. This does the
 * same steps as ``outbox.write_out`` and, where the outbox's transport is a plain TCP
 * socket (``wire_fd`` >= 0) with nothing buffered, writes with one ``send`` on the
 * descriptor: what the transport would do first itself. Whatever ``send`` does not take
 * (a full socket buffer, an error) goes to ``transport.write``, which buffers it or
 * reports the error the way it always does, so ordering and error handling stay the
 * transport's.
 *
 * A room's broadcast in a quiet loop skips the outboxes (``broadcast``, in
 * signaling/_broadcast.c), with this file's batch of sends and its ``fanout_finish``.
 */
#include "_fanout.h" /* Python.h first */

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

static PyObject *s_frames, *s_wire, *s_closed, *s_wire_fd, *s_is_closing, *s_transport_lost,
    *s_get_write_buffer_size, *s_write, *s_send_buffer_limit, *s_too_slow;

/* The frames as one bytes object (a new reference); NULL with an exception set. */
static PyObject *joined(PyObject *frames) {
    Py_ssize_t count = PyList_GET_SIZE(frames), total = 0;
    if (count == 1) {
        PyObject *only = PyList_GET_ITEM(frames, 0);
        if (PyBytes_CheckExact(only)) {
            Py_INCREF(only);
            return only;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(frames, i);
        if (!PyBytes_CheckExact(item)) {
            PyErr_SetString(PyExc_TypeError, "queued frames must be bytes");
            return NULL;
        }
        total += PyBytes_GET_SIZE(item);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    char *at = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(frames, i);
        memcpy(at, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
        at += PyBytes_GET_SIZE(item);
    }
    return out;
}

/* A new reference (an attribute, a call's result) as a C long, released; -1 with an
 * exception set if there was none or it is not an int. */
static long as_long(PyObject *owned) {
    if (owned == NULL)
        return -1;
    long v = PyLong_AsLong(owned);
    Py_DECREF(owned);
    return v;
}

/* Hand ``data`` to the transport, then drop the peer if too much waits unread. */
static int write_through(PyObject *box, PyObject *wire, PyObject *data) {
    PyObject *r = PyObject_CallMethodOneArg(wire, s_write, data);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    long buffered = as_long(PyObject_CallMethodNoArgs(wire, s_get_write_buffer_size));
    if (buffered == -1 && PyErr_Occurred())
        return -1;
    long limit = as_long(PyObject_GetAttr(box, s_send_buffer_limit));
    if (limit == -1 && PyErr_Occurred())
        return -1;
    if (buffered > limit) {
        r = PyObject_CallMethodNoArgs(box, s_too_slow);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Empty the outbox's list in place: 0, or -1 with an exception set. */
static int empty(PyObject *frames) {
    return PyList_SetSlice(frames, 0, PyList_GET_SIZE(frames), NULL);
}

enum { BOX_DONE = 0, BOX_SEND = 1, BOX_ERROR = -1 };

/* Everything before an outbox's send. BOX_SEND: ``*wire`` and ``*data`` are set (new
 * references) and ``*fd`` is the descriptor to send on, the transport buffering nothing.
 * BOX_DONE: nothing (more) to send, or handed to the transport here; BOX_ERROR: an
 * exception is set. */
static int prepare(PyObject *box, PyObject **wire_out, PyObject **data_out, int *fd_out) {
    int result = BOX_ERROR;
    PyObject *wire = NULL, *data = NULL;
    PyObject *frames = PyObject_GetAttr(box, s_frames);
    if (frames == NULL)
        return BOX_ERROR;
    if (!PyList_CheckExact(frames) || PyList_GET_SIZE(frames) == 0) {
        result = BOX_DONE;
        goto done;
    }
    /* The frames leave the list, which stays the outbox's: emptied in place, not
     * replaced, so a flush allocates no list per recipient (nor links one into, and
     * unlinks one from, the garbage collector's lists). */
    data = joined(frames);
    if (data == NULL) { /* frames that are not bytes: refused, and dropped all the same */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (empty(frames) < 0)
            PyErr_Clear(); /* the refusal is the error to report */
        PyErr_Restore(type, value, traceback);
        goto done;
    }
    if (empty(frames) < 0)
        goto done;
    PyObject *closed = PyObject_GetAttr(box, s_closed);
    if (closed == NULL)
        goto done;
    int is_closed = PyObject_IsTrue(closed);
    Py_DECREF(closed);
    if (is_closed < 0)
        goto done;
    wire = PyObject_GetAttr(box, s_wire);
    if (wire == NULL)
        goto done;
    if (is_closed || wire == Py_None) {
        result = BOX_DONE;
        goto done;
    }
    PyObject *closing = PyObject_CallMethodNoArgs(wire, s_is_closing);
    if (closing == NULL)
        goto done;
    int is_closing = PyObject_IsTrue(closing);
    Py_DECREF(closing);
    if (is_closing < 0)
        goto done;
    if (is_closing) {
        PyObject *r = PyObject_CallMethodNoArgs(box, s_transport_lost);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
        result = BOX_DONE;
        goto done;
    }
    long fd = as_long(PyObject_GetAttr(box, s_wire_fd));
    if (fd == -1 && PyErr_Occurred())
        goto done;
    if (fd >= 0) {
        long buffered = as_long(PyObject_CallMethodNoArgs(wire, s_get_write_buffer_size));
        if (buffered == -1 && PyErr_Occurred())
            goto done;
        if (buffered == 0) {
            *wire_out = wire;
            *data_out = data;
            *fd_out = (int)fd;
            Py_DECREF(frames);
            return BOX_SEND;
        }
    }
    result = write_through(box, wire, data) < 0 ? BOX_ERROR : BOX_DONE;
done:
    Py_XDECREF(data);
    Py_XDECREF(wire);
    Py_DECREF(frames);
    return result;
}

/* After a send on the descriptor took ``n`` of ``data``'s bytes (n <= 0: none, a full
 * buffer or an error the transport will report): the rest goes to the transport. */
int fanout_finish(PyObject *box, PyObject *wire, PyObject *data, Py_ssize_t n) {
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (n == size)
        return 0; /* all of it in the kernel: nothing waits unread here */
    if (n <= 0)
        return write_through(box, wire, data);
    PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + n, size - n);
    if (rest == NULL)
        return -1;
    int r = write_through(box, wire, rest);
    Py_DECREF(rest);
    return r;
}

Py_ssize_t fanout_send_now(int fd, PyObject *data) {
    return send(fd, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
                MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* One outbox, its send a system call of its own: 0, or -1 with an exception set. */
static int write_box(PyObject *box) {
    PyObject *wire = NULL, *data = NULL;
    int fd = -1;
    int r = prepare(box, &wire, &data, &fd);
    if (r != BOX_SEND)
        return r;
    r = fanout_finish(box, wire, data, fanout_send_now(fd, data));
    Py_DECREF(wire);
    Py_DECREF(data);
    return r;
}

static PyObject *write_out(PyObject *self, PyObject *boxes) {
    PyObject *iterator = PyObject_GetIter(boxes);
    if (iterator == NULL)
        return NULL;
    PyObject *box;
    while ((box = PyIter_Next(iterator)) != NULL) {
        int r = write_box(box);
        Py_DECREF(box);
        if (r < 0) {
            Py_DECREF(iterator);
            return NULL;
        }
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* The outboxes whose sends wait in the ring, with what each send needs. */
struct fanout_send fanout_batch[URING_BATCH];
static int results[URING_BATCH];

/* Send what is queued in one submission and finish each outbox; every entry is finished
 * and released even after an error, the first of which is left set: 0 or -1. */
int fanout_run_batch(unsigned count) {
    if (count == 0)
        return 0;
    uring_run(count, results);
    PyObject *type = NULL, *value = NULL, *traceback = NULL;
    for (unsigned i = 0; i < count; i++) {
        struct fanout_send *entry = &fanout_batch[i];
        Py_ssize_t n = results[i];
        if (results[i] == URING_NOT_RUN) /* the kernel did not take it: sent here */
            n = fanout_send_now(entry->fd, entry->data);
        if (fanout_finish(entry->box, entry->wire, entry->data, n) < 0) {
            if (type == NULL)
                PyErr_Fetch(&type, &value, &traceback);
            else
                PyErr_Clear();
        }
        Py_DECREF(entry->box);
        Py_DECREF(entry->wire);
        Py_DECREF(entry->data);
    }
    if (type == NULL)
        return 0;
    PyErr_Restore(type, value, traceback);
    return -1;
}

/* The outboxes' ``frames`` and ``wire`` slots, to prefetch (see _fanout.h). */
static struct fanout_slot frames_slot = {&s_frames, NULL, 0, -1};
static struct fanout_slot wire_slot = {&s_wire, NULL, 0, -1};

/* Ask for outbox ``i + FANOUT_AHEAD`` of the flush's list, and for ``i + FANOUT_AHEAD /
 * 2``'s list of frames and transport (its object asked for two outboxes ago). */
static void warm(PyObject *boxes, Py_ssize_t i) {
    Py_ssize_t count = PyList_GET_SIZE(boxes), far = i + FANOUT_AHEAD;
    Py_ssize_t near = i + FANOUT_AHEAD / 2;
    if (far < count)
        fanout_prefetch(PyList_GET_ITEM(boxes, far), FANOUT_OBJECT_LINES);
    if (near < count) {
        PyObject *box = PyList_GET_ITEM(boxes, near);
        fanout_prefetch(fanout_slot_value(&frames_slot, box), 1);
        fanout_prefetch(fanout_slot_value(&wire_slot, box), FANOUT_TRANSPORT_LINES);
    }
}

static PyObject *batched(PyObject *boxes) {
    PyObject *iterator = PyObject_GetIter(boxes);
    if (iterator == NULL)
        return NULL;
    /* The batcher hands over its list of the iteration's outboxes (a new one takes its
     * place): the position in it tells which to ask for ahead. */
    int ahead = PyList_CheckExact(boxes);
    if (ahead)
        for (Py_ssize_t i = 0; i < FANOUT_AHEAD && i < PyList_GET_SIZE(boxes); i++)
            fanout_prefetch(PyList_GET_ITEM(boxes, i), FANOUT_OBJECT_LINES);
    unsigned count = 0;
    Py_ssize_t position = 0;
    PyObject *box;
    while ((box = PyIter_Next(iterator)) != NULL) {
        if (ahead)
            warm(boxes, position++);
        PyObject *wire = NULL, *data = NULL;
        int fd = -1;
        int r = prepare(box, &wire, &data, &fd);
        if (r != BOX_SEND) {
            Py_DECREF(box);
            if (r < 0)
                break;
            continue;
        }
        uring_queue_send(count, fd, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
        fanout_batch[count].box = box; /* the references are the batch's until it is run */
        fanout_batch[count].wire = wire;
        fanout_batch[count].data = data;
        fanout_batch[count].fd = fd;
        if (++count == URING_BATCH) {
            count = 0;
            if (fanout_run_batch(URING_BATCH) < 0)
                break;
        }
    }
    Py_DECREF(iterator);
    /* The sends already queued go out whatever happened after them; an error from before
     * them is the one reported. */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int r = fanout_run_batch(count);
    if (type == NULL) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (r < 0)
        PyErr_Clear();
    PyErr_Restore(type, value, traceback);
    return NULL;
}

/* The batch and its results are this module's: a flush reached again from Python code
 * that a flush runs (an outbox's ``too_slow``, a transport's callbacks) sends box by box
 * instead of overwriting them. */
int fanout_batch_running = 0;

static PyObject *write_out_batched(PyObject *self, PyObject *boxes) {
    if (fanout_batch_running || !uring_ready())
        return write_out(self, boxes);
    fanout_batch_running = 1;
    PyObject *r = batched(boxes);
    fanout_batch_running = 0;
    return r;
}

static PyObject *io_uring_ready(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(uring_ready());
}

static PyObject *io_uring_parked(PyObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLong(uring_parked());
}

static PyMethodDef methods[] = {
    {"write_out", write_out, METH_O,
     "Write each outbox's queued frames in one call (see signaling.outbox.write_out)."},
    {"write_out_batched", write_out_batched, METH_O,
     "write_out with the direct sends submitted together through io_uring (write_out "
     "where io_uring is unavailable)."},
    {"broadcast", fanout_broadcast, METH_VARARGS,
     "broadcast(fds, kinds, socks, wires, frames, skip) -> (sent, fallback, error): send a "
     "room broadcast at once to every recipient that may be (see signaling.direct_writes); "
     "fallback lists the indexes of the others, error is the first exception or None."},
    {"queue", fanout_queue, METH_VARARGS,
     "queue(kinds, socks, wires, frames, skip, marked) -> (queued, fallback): queue a room "
     "broadcast on its recipients' outboxes as their send_frame would; those that got their "
     "first frame are appended to marked, fallback lists the indexes left to send_frame."},
    {"direct_written", fanout_direct_written, METH_NOARGS,
     "How many deliveries broadcast wrote at once, in this process."},
    {"huge_arenas", fanout_huge_arenas, METH_NOARGS,
     "Take Python's object arenas from 2 MiB-aligned reservations marked for transparent "
     "huge pages from now on (see signaling.huge_pages)."},
    {"huge_arena_count", fanout_huge_arena_count, METH_NOARGS,
     "How many arenas were taken from those reservations, in this process."},
    {"io_uring_ready", io_uring_ready, METH_NOARGS,
     "Whether this process can submit sends through io_uring."},
    {"io_uring_parked", io_uring_parked, METH_NOARGS,
     "How many sends the kernel took through io_uring without finishing them at once "
     "(each was cancelled and sent directly)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "signaling._fanout",
    "The batcher's write of the outboxes filled in one loop iteration, compiled.", -1, methods,
};

PyMODINIT_FUNC PyInit__fanout(void) {
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_frames, "frames"},
        {&s_wire, "wire"},
        {&s_closed, "closed"},
        {&s_wire_fd, "wire_fd"},
        {&s_is_closing, "is_closing"},
        {&s_transport_lost, "transport_lost"},
        {&s_get_write_buffer_size, "get_write_buffer_size"},
        {&s_write, "write"},
        {&s_send_buffer_limit, "send_buffer_limit"},
        {&s_too_slow, "too_slow"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (*names[i].slot == NULL)
            return NULL;
    }
    if (fanout_broadcast_init() < 0)
        return NULL;
    return PyModule_Create(&module);
}
