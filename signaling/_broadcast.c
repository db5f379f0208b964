/* signaling._fanout's ``broadcast``: a room's broadcast written at once to the
 * recipients that allow it, without their outboxes (signaling/direct_writes.py says when
 * and why).
 *
 * The room's plan gives its recipients as flat lists (descriptors, kinds, socket
 * objects, transports). A recipient is sent the frame of its kind now, as an entry of
 * one io_uring submission like a flush's, when nothing waits in its outbox (its
 * ``frames`` list is empty), it is not closed, and its transport is not closing and
 * buffers nothing: then no frame of its own can be overtaken (a send that fell short
 * left the rest in the transport's buffer), and the descriptor is still its own (a
 * transport closes its descriptor only after it started closing). What a send does not
 * take goes to the transport, as in a flush. Every other recipient is left to
 * ``send_frame`` (the indexes returned), so its frames keep their order through its
 * outbox.
 */
#include "_fanout.h"

#include <structmember.h>

static PyObject *s_frames, *s_closed, *s_is_closing, *s_get_write_buffer_size;

/* Deliveries written at once since the process started (the node's metrics). */
static unsigned long long written = 0;

PyObject *fanout_direct_written(PyObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(written);
}

/* Whether a recipient of a broadcast may be sent ``data`` on ``fd`` now: nothing waits
 * in its outbox, it is not closed, and its transport is open and buffers nothing (a
 * transport that is closing may have closed the descriptor, which a new connection may
 * hold). */
static int direct_ok(int fd, PyObject *sock, PyObject *wire, PyObject *data) {
    if (fd < 0 || data == NULL || !PyBytes_CheckExact(data))
        return 0;
    PyObject *v = PyObject_GetAttr(sock, s_frames);
    int ok = v != NULL && PyList_CheckExact(v) && PyList_GET_SIZE(v) == 0;
    Py_XDECREF(v);
    if (ok) {
        v = PyObject_GetAttr(sock, s_closed);
        ok = v == Py_False;
        Py_XDECREF(v);
    }
    if (ok) {
        v = PyObject_CallMethodNoArgs(wire, s_is_closing);
        ok = v == Py_False;
        Py_XDECREF(v);
    }
    if (ok) {
        v = PyObject_CallMethodNoArgs(wire, s_get_write_buffer_size);
        ok = v != NULL && PyLong_CheckExact(v) && PyLong_AsLong(v) == 0;
        Py_XDECREF(v);
    }
    PyErr_Clear(); /* a failed check sends through the outbox, which reports it */
    return ok;
}

/* The first error of a broadcast, kept while every other recipient is still written. */
struct first_error {
    PyObject *type, *value, *traceback;
};

static void keep_first(struct first_error *e) {
    if (e->type == NULL)
        PyErr_Fetch(&e->type, &e->value, &e->traceback);
    else
        PyErr_Clear();
}

/* The error as an exception object to hand back (a new reference), or None. */
static PyObject *as_exception(struct first_error *e) {
    if (e->type == NULL)
        return Py_NewRef(Py_None);
    PyErr_NormalizeException(&e->type, &e->value, &e->traceback);
    if (e->traceback != NULL && e->value != NULL)
        PyException_SetTraceback(e->value, e->traceback);
    PyObject *value = e->value != NULL ? e->value : Py_NewRef(Py_None);
    Py_XDECREF(e->type);
    Py_XDECREF(e->traceback);
    return value;
}

/* A broadcast reaches each recipient cold in memory: its socket object, the list of its
 * outbox and its transport are each a cache miss, and checking them one recipient after
 * the other waits for each in turn. So the loops ask for recipient i + FANOUT_AHEAD's
 * objects ahead of time, and, once those are in, for i + FANOUT_AHEAD / 2's outbox list
 * (read through the slot of ``frames``). */
static struct fanout_slot frames_slot = {&s_frames, NULL, 0, -1};

/* Ask for recipient ``i + FANOUT_AHEAD``'s socket and transport objects, and for ``i +
 * FANOUT_AHEAD / 2``'s outbox list (its socket object asked for two recipients ago). */
static inline void warm(PyObject *socks, PyObject *wires, Py_ssize_t i, Py_ssize_t count) {
    Py_ssize_t far = i + FANOUT_AHEAD, near = i + FANOUT_AHEAD / 2;
    if (far >= 0 && far < count) {
        fanout_prefetch(PyList_GET_ITEM(socks, far), FANOUT_OBJECT_LINES);
        fanout_prefetch(PyList_GET_ITEM(wires, far), FANOUT_TRANSPORT_LINES);
    }
    if (near >= 0 && near < count)
        fanout_prefetch(fanout_slot_value(&frames_slot, PyList_GET_ITEM(socks, near)), 1);
}

PyObject *fanout_slot_value(struct fanout_slot *slot, PyObject *obj) {
    PyTypeObject *type = Py_TYPE(obj);
    if (type != slot->type || type->tp_version_tag != slot->version) {
        slot->type = type;
        slot->version = type->tp_version_tag;
        slot->offset = -1;
        PyObject *descr = _PyType_Lookup(type, *slot->name);
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == T_OBJECT_EX &&
                member->offset + (Py_ssize_t)sizeof(PyObject *) <= type->tp_basicsize)
                slot->offset = member->offset;
        }
    }
    return slot->offset < 0 ? NULL : *(PyObject **)((char *)obj + slot->offset);
}

/* Whether ``sock`` is one of the broadcast's skipped sockets (the sender's devices). */
static int skipped(PyObject *skip, PyObject *sock) {
    for (Py_ssize_t k = 0, n = PyTuple_GET_SIZE(skip); k < n; k++)
        if (PyTuple_GET_ITEM(skip, k) == sock)
            return 1;
    return 0;
}

/* Queue ``data`` on the outbox of a recipient that is open and whose transport is not
 * closing, as its ``send_frame`` would: 1 queued (``*first``: its first frame since the
 * last flush, so the batcher must be told), 0 left to ``send_frame``, -1 an error. */
static int queue_one(PyObject *sock, PyObject *wire, PyObject *data, int *first) {
    if (data == NULL || !PyBytes_CheckExact(data))
        return 0;
    PyObject *v = PyObject_GetAttr(sock, s_closed);
    int ok = v == Py_False;
    Py_XDECREF(v);
    if (ok) {
        v = PyObject_CallMethodNoArgs(wire, s_is_closing);
        ok = v == Py_False;
        Py_XDECREF(v);
    }
    PyErr_Clear(); /* a failed check is left to send_frame, which reports it */
    if (!ok)
        return 0;
    PyObject *frames = PyObject_GetAttr(sock, s_frames);
    if (frames == NULL || !PyList_CheckExact(frames)) {
        Py_XDECREF(frames);
        PyErr_Clear();
        return 0;
    }
    int r = PyList_Append(frames, data);
    *first = PyList_GET_SIZE(frames) == 1;
    Py_DECREF(frames);
    return r < 0 ? -1 : 1;
}

/* queue(kinds, socks, wires, frames, skip, marked) -> (queued, fallback): a room's
 * broadcast queued on its recipients' outboxes, as their ``send_frame`` would, without a
 * Python call for each; those that got their first frame are appended to ``marked`` for
 * the batcher. ``fallback`` lists the indexes left to ``send_frame``. */
PyObject *fanout_queue(PyObject *self, PyObject *args) {
    const char *kinds;
    Py_ssize_t nkinds;
    PyObject *socks, *wires, *frames, *skip, *marked;
    if (!PyArg_ParseTuple(args, "y#O!O!O!O!O!", &kinds, &nkinds, &PyList_Type, &socks,
                          &PyList_Type, &wires, &PyTuple_Type, &frames, &PyTuple_Type, &skip,
                          &PyList_Type, &marked))
        return NULL;
    Py_ssize_t count = nkinds;
    if (PyList_GET_SIZE(socks) != count || PyList_GET_SIZE(wires) != count) {
        PyErr_SetString(PyExc_ValueError, "a plan's columns differ in length");
        return NULL;
    }
    PyObject *fallback = PyList_New(0);
    if (fallback == NULL)
        return NULL;
    Py_ssize_t queued = 0, nframes = PyTuple_GET_SIZE(frames);
    for (Py_ssize_t i = 0; i < FANOUT_AHEAD && i < count; i++)
        warm(socks, wires, i - FANOUT_AHEAD, count);
    for (Py_ssize_t i = 0; i < count; i++) {
        warm(socks, wires, i, count);
        PyObject *sock = PyList_GET_ITEM(socks, i), *wire = PyList_GET_ITEM(wires, i);
        if (skipped(skip, sock))
            continue;
        int kind = (unsigned char)kinds[i], first = 0;
        PyObject *data = kind < nframes ? PyTuple_GET_ITEM(frames, kind) : NULL;
        int r = queue_one(sock, wire, data, &first);
        if (r > 0 && first)
            r = PyList_Append(marked, sock) < 0 ? -1 : 1;
        if (r < 0) {
            Py_DECREF(fallback);
            return NULL;
        }
        if (r > 0) {
            queued++;
            continue;
        }
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(fallback, index) < 0) {
            Py_XDECREF(index);
            Py_DECREF(fallback);
            return NULL;
        }
        Py_DECREF(index);
    }
    return Py_BuildValue("(nN)", queued, fallback);
}

/* broadcast(fds, kinds, socks, wires, frames, skip) -> (sent, fallback, error): every
 * recipient is handled even after an error, which comes back as the third item. */
PyObject *fanout_broadcast(PyObject *self, PyObject *args) {
    Py_buffer fds;
    const char *kinds;
    Py_ssize_t nkinds;
    PyObject *socks, *wires, *frames, *skip;
    if (!PyArg_ParseTuple(args, "y*y#O!O!O!O!", &fds, &kinds, &nkinds, &PyList_Type, &socks,
                          &PyList_Type, &wires, &PyTuple_Type, &frames, &PyTuple_Type, &skip))
        return NULL;
    Py_ssize_t count = fds.len / (Py_ssize_t)sizeof(int);
    if (fds.itemsize != (Py_ssize_t)sizeof(int) || nkinds != count ||
        PyList_GET_SIZE(socks) != count || PyList_GET_SIZE(wires) != count) {
        PyBuffer_Release(&fds);
        PyErr_SetString(PyExc_ValueError, "a plan's columns differ in length");
        return NULL;
    }
    PyObject *fallback = PyList_New(0);
    if (fallback == NULL) {
        PyBuffer_Release(&fds);
        return NULL;
    }
    const int *fd = (const int *)fds.buf;
    /* A broadcast from code a flush runs (a transport's callback) leaves the flush's
     * batch alone: everything goes through the outboxes. */
    int direct = !fanout_batch_running, ring = direct && uring_ready();
    if (ring)
        fanout_batch_running = 1;
    struct first_error error = {NULL, NULL, NULL};
    Py_ssize_t sent = 0, nframes = PyTuple_GET_SIZE(frames);
    unsigned queued = 0;
    for (Py_ssize_t i = 0; i < FANOUT_AHEAD && i < count; i++)
        warm(socks, wires, i - FANOUT_AHEAD, count);
    for (Py_ssize_t i = 0; i < count; i++) {
        warm(socks, wires, i, count);
        PyObject *sock = PyList_GET_ITEM(socks, i), *wire = PyList_GET_ITEM(wires, i);
        if (skipped(skip, sock))
            continue;
        int kind = (unsigned char)kinds[i];
        PyObject *data = kind < nframes ? PyTuple_GET_ITEM(frames, kind) : NULL;
        if (!direct || !direct_ok(fd[i], sock, wire, data)) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(fallback, index) < 0)
                keep_first(&error);
            Py_XDECREF(index);
            continue;
        }
        sent++;
        if (!ring) { /* no io_uring here: each send a system call of its own */
            if (fanout_finish(sock, wire, data, fanout_send_now(fd[i], data)) < 0)
                keep_first(&error);
            continue;
        }
        uring_queue_send(queued, fd[i], PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
        Py_INCREF(sock); /* the batch's, released by fanout_run_batch */
        Py_INCREF(wire);
        Py_INCREF(data);
        fanout_batch[queued].box = sock;
        fanout_batch[queued].wire = wire;
        fanout_batch[queued].data = data;
        fanout_batch[queued].fd = fd[i];
        if (++queued == URING_BATCH) {
            if (fanout_run_batch(queued) < 0)
                keep_first(&error);
            queued = 0;
        }
    }
    if (fanout_run_batch(queued) < 0)
        keep_first(&error);
    if (ring)
        fanout_batch_running = 0;
    PyBuffer_Release(&fds);
    written += (unsigned long long)sent;
    return Py_BuildValue("(nNN)", sent, fallback, as_exception(&error));
}

int fanout_broadcast_init(void) {
    s_frames = PyUnicode_InternFromString("frames");
    s_closed = PyUnicode_InternFromString("closed");
    s_is_closing = PyUnicode_InternFromString("is_closing");
    s_get_write_buffer_size = PyUnicode_InternFromString("get_write_buffer_size");
    return s_frames && s_closed && s_is_closing && s_get_write_buffer_size ? 0 : -1;
}
