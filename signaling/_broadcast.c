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
    Py_ssize_t sent = 0, nskip = PyTuple_GET_SIZE(skip), nframes = PyTuple_GET_SIZE(frames);
    unsigned queued = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *sock = PyList_GET_ITEM(socks, i), *wire = PyList_GET_ITEM(wires, i);
        int skipped = 0;
        for (Py_ssize_t k = 0; k < nskip && !skipped; k++)
            skipped = PyTuple_GET_ITEM(skip, k) == sock;
        if (skipped)
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
