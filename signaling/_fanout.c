/* signaling._fanout: the batcher's write of every outbox filled during one loop
 * iteration (signaling/outbox.py), in one C loop; and the hub's queueing of one broadcast
 * for each recipient (``deliver``, below).
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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

static PyObject *s_frames, *s_wire, *s_closed, *s_wire_fd, *s_is_closing, *s_transport_lost,
    *s_get_write_buffer_size, *s_write, *s_send_buffer_limit, *s_too_slow, *s_user_id,
    *s_queue_kind, *s_session, *s_translator, *s_translate, *s_send_frame, *s_batcher, *s_dirty,
    *s_scheduled, *s_schedule;

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

/* One outbox: 0, or -1 with an exception set. */
static int write_box(PyObject *box) {
    int result = -1;
    PyObject *wire = NULL, *data = NULL, *rest = NULL;
    PyObject *frames = PyObject_GetAttr(box, s_frames);
    if (frames == NULL)
        return -1;
    if (!PyList_CheckExact(frames) || PyList_GET_SIZE(frames) == 0) {
        result = 0;
        goto done;
    }
    PyObject *empty = PyList_New(0);
    if (empty == NULL)
        goto done;
    int set = PyObject_SetAttr(box, s_frames, empty);
    Py_DECREF(empty);
    if (set < 0)
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
        result = 0;
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
        result = 0;
        goto done;
    }
    data = joined(frames);
    if (data == NULL)
        goto done;
    long fd = as_long(PyObject_GetAttr(box, s_wire_fd));
    if (fd == -1 && PyErr_Occurred())
        goto done;
    if (fd >= 0) {
        long buffered = as_long(PyObject_CallMethodNoArgs(wire, s_get_write_buffer_size));
        if (buffered == -1 && PyErr_Occurred())
            goto done;
        if (buffered == 0) {
            Py_ssize_t size = PyBytes_GET_SIZE(data);
            ssize_t n = send((int)fd, PyBytes_AS_STRING(data), (size_t)size,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n == size) {
                result = 0;  /* all of it in the kernel: nothing waits unread here */
                goto done;
            }
            if (n > 0) {
                rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + n, size - n);
                if (rest == NULL)
                    goto done;
                result = write_through(box, wire, rest);
                goto done;
            }
            /* nothing taken (a full buffer, or an error the transport will report) */
        }
    }
    result = write_through(box, wire, data);
done:
    Py_XDECREF(rest);
    Py_XDECREF(data);
    Py_XDECREF(wire);
    Py_DECREF(frames);
    return result;
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

/* -- deliver: the hub's fan-out to this node's sockets ---------------------------------------
 *
 * Why: with the write compiled, what was left per recipient in Python was the hub's loop
 * and the socket's ``send_frame`` (for a Socket.IO client, the session's ``write`` too):
 * about a sixth of a node's CPU at chat loads. A socket's ``queue_kind`` says how it may be
 * queued for here (``signaling.outbox``): its own outbox, or its Engine.IO session's with the
 * frame its translator makes (once per broadcast). Anything else, and any socket whose
 * outbox cannot take the frame now (closed, polling, a closing transport), goes through
 * its ``send_frame``, which decides as it always does. */

enum { KIND_CALL = 0, KIND_SELF = 1, KIND_SESSION = 2 };

/* What stays the same across one broadcast's recipients: the last batcher seen, its list
 * and whether its flush is scheduled; the last translator and its frame (references
 * held until the broadcast is queued). */
typedef struct {
    PyObject *batcher, *dirty;
    int scheduled;
    PyObject *translator, *translated;
} Round;

static void round_clear(Round *r) {
    Py_CLEAR(r->batcher);
    Py_CLEAR(r->dirty);
    Py_CLEAR(r->translator);
    Py_CLEAR(r->translated);
}

/* Put ``box`` on its batcher's list for this iteration, as ``WriteBatcher.mark`` does. */
static int mark(Round *r, PyObject *box) {
    PyObject *batcher = PyObject_GetAttr(box, s_batcher);
    if (batcher == NULL)
        return -1;
    if (batcher != r->batcher) {
        PyObject *dirty = PyObject_GetAttr(batcher, s_dirty);
        PyObject *scheduled = dirty == NULL ? NULL : PyObject_GetAttr(batcher, s_scheduled);
        int is_scheduled = scheduled == NULL ? -1 : PyObject_IsTrue(scheduled);
        Py_XDECREF(scheduled);
        if (is_scheduled < 0 || !PyList_CheckExact(dirty)) {
            if (is_scheduled >= 0)
                PyErr_SetString(PyExc_TypeError, "a batcher's dirty must be a list");
            Py_XDECREF(dirty);
            Py_DECREF(batcher);
            return -1;
        }
        Py_XSETREF(r->batcher, batcher);
        Py_XSETREF(r->dirty, dirty);
        r->scheduled = is_scheduled;
    } else
        Py_DECREF(batcher);
    if (PyList_Append(r->dirty, box) < 0)
        return -1;
    if (!r->scheduled) {
        PyObject *done = PyObject_CallMethodNoArgs(r->batcher, s_schedule);
        if (done == NULL)
            return -1;
        Py_DECREF(done);
        r->scheduled = 1;
    }
    return 0;
}

/* Queue ``data`` on ``box``: 1 if queued, 0 if the box cannot take it now (the socket's
 * send_frame decides), -1 with an exception set. */
static int queue(Round *r, PyObject *box, PyObject *data) {
    PyObject *closed = PyObject_GetAttr(box, s_closed);
    if (closed == NULL)
        return -1;
    int is_closed = PyObject_IsTrue(closed);
    Py_DECREF(closed);
    if (is_closed != 0)
        return is_closed < 0 ? -1 : 0;
    PyObject *wire = PyObject_GetAttr(box, s_wire);
    if (wire == NULL)
        return -1;
    if (wire == Py_None) {
        Py_DECREF(wire);
        return 0;
    }
    PyObject *closing = PyObject_CallMethodNoArgs(wire, s_is_closing);
    Py_DECREF(wire);
    if (closing == NULL)
        return -1;
    int is_closing = PyObject_IsTrue(closing);
    Py_DECREF(closing);
    if (is_closing != 0)
        return is_closing < 0 ? -1 : 0;
    PyObject *frames = PyObject_GetAttr(box, s_frames);
    if (frames == NULL)
        return -1;
    if (!PyList_CheckExact(frames)) {
        Py_DECREF(frames);
        return 0;
    }
    int first = PyList_GET_SIZE(frames) == 0;
    int appended = PyList_Append(frames, data);
    Py_DECREF(frames);
    if (appended < 0)
        return -1;
    return first && mark(r, box) < 0 ? -1 : 1;
}

/* The WebSocket frame ``translator`` makes of ``frame`` (borrowed from the round). */
static PyObject *translated(Round *r, PyObject *translator, PyObject *frame) {
    if (translator == r->translator)
        return r->translated;
    PyObject *result = PyObject_CallMethodOneArg(translator, s_translate, frame);
    if (result == NULL)
        return NULL;
    if (!PyTuple_CheckExact(result) || PyTuple_GET_SIZE(result) < 2 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(result, 1))) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_TypeError, "translate() must give (packet, frame, mark)");
        return NULL;
    }
    Py_INCREF(translator);
    Py_XSETREF(r->translator, translator);
    Py_INCREF(PyTuple_GET_ITEM(result, 1));
    Py_XSETREF(r->translated, PyTuple_GET_ITEM(result, 1));
    Py_DECREF(result);
    return r->translated;
}

/* One recipient: 1 if written, 0 if not, -1 with an exception set. */
static int deliver_one(Round *r, PyObject *socket, PyObject *frame) {
    long kind = as_long(PyObject_GetAttr(socket, s_queue_kind));
    if (kind == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();  /* a socket that does not say: its send_frame */
        kind = KIND_CALL;
    }
    int queued = 0;
    if (kind == KIND_SELF)
        queued = queue(r, socket, frame);
    else if (kind == KIND_SESSION) {
        PyObject *closed = PyObject_GetAttr(socket, s_closed);
        int is_closed = closed == NULL ? -1 : PyObject_IsTrue(closed);
        Py_XDECREF(closed);
        if (is_closed < 0)
            return -1;
        if (!is_closed) {
            PyObject *session = PyObject_GetAttr(socket, s_session);
            PyObject *translator =
                session == NULL ? NULL : PyObject_GetAttr(socket, s_translator);
            PyObject *data = translator == NULL ? NULL : translated(r, translator, frame);
            queued = data == NULL ? -1 : queue(r, session, data);
            Py_XDECREF(translator);
            Py_XDECREF(session);
        }
    }
    if (queued != 0)
        return queued;
    PyObject *sent = PyObject_CallMethodOneArg(socket, s_send_frame, frame);
    if (sent == NULL)
        return -1;
    int ok = PyObject_IsTrue(sent);
    Py_DECREF(sent);
    return ok;
}

static PyObject *deliver(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "deliver(targets, frame, exclude_user)");
        return NULL;
    }
    PyObject *frame = args[1], *exclude = args[2];
    if (exclude != Py_None && !PyUnicode_Check(exclude)) {
        PyErr_SetString(PyExc_TypeError, "exclude_user must be a str or None");
        return NULL;
    }
    PyObject *iterator = PyObject_GetIter(args[0]);
    if (iterator == NULL)
        return NULL;
    Round r = {0};
    long sent = 0;
    PyObject *socket;
    while ((socket = PyIter_Next(iterator)) != NULL) {
        int written = 0;
        if (exclude != Py_None) {
            PyObject *user = PyObject_GetAttr(socket, s_user_id);
            int same = user == NULL ? -1
                       : user == exclude ? 1
                       : PyUnicode_Check(user) ? PyUnicode_Compare(user, exclude) == 0
                                               : 0;
            Py_XDECREF(user);
            if (same < 0 || (same == 0 && PyErr_Occurred()))
                written = -1;
            else if (same)
                written = 0;
            else
                written = deliver_one(&r, socket, frame);
        } else
            written = deliver_one(&r, socket, frame);
        Py_DECREF(socket);
        if (written < 0) {
            round_clear(&r);
            Py_DECREF(iterator);
            return NULL;
        }
        sent += written;
    }
    round_clear(&r);
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(sent);
}

static PyMethodDef methods[] = {
    {"write_out", write_out, METH_O,
     "Write each outbox's queued frames in one call (see signaling.outbox.write_out)."},
    {"deliver", (PyCFunction)(void (*)(void))deliver, METH_FASTCALL,
     "deliver(targets, frame, exclude_user) -> int: queue the frame for each socket whose "
     "user is not exclude_user (see signaling.outbox); the number written."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "signaling._fanout",
    "The fan-out's queueing and the batcher's write, compiled.", -1, methods,
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
        {&s_user_id, "user_id"},
        {&s_queue_kind, "queue_kind"},
        {&s_session, "session"},
        {&s_translator, "translator"},
        {&s_translate, "translate"},
        {&s_send_frame, "send_frame"},
        {&s_batcher, "batcher"},
        {&s_dirty, "dirty"},
        {&s_scheduled, "scheduled"},
        {&s_schedule, "schedule"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (*names[i].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
