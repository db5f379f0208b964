/* The compiled sending edge of a forwarded RTP packet (see media/rtp_writer.py).
 *
 * Forwarding one packet to one subscriber is: a new 12-byte header in front of the
 * publisher's payload, libsrtp's protection, and a datagram.  In Python that is a struct
 * pack, two concatenations, a copy into pylibsrtp's buffer, a cffi call, a slice and a
 * socket method: about a third of a media node's CPU in a room of 50, for work that is
 * a few hundred machine instructions.  A Sender does it in one call, in one buffer of
 * its own, and reports what Python must still do: nothing, take the checked path (the
 * packet is too big, libsrtp refused it, the socket is gone), or queue the protected
 * datagram because the socket's buffer is full.
 *
 * It knows nothing of aiortc or libsrtp's headers: the writer hands it the socket's
 * descriptor, the address of libsrtp's srtp_protect (from pylibsrtp's cffi library, the
 * copy of libsrtp that made the session) and the session's context (open()).  The
 * writer keeps the session and the socket alive and calls close() before either goes;
 * the Sender itself lives as long as the writer, so the slots' compiled steady steps
 * (media/_lane.c, which send through sender_forward) can hold it.
 *
 * The module also holds those steps' Lane (media/_lane.c) and the pacing clock they
 * stamp with (media/_pace.c).
 */

#include "_rtpsend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* open(fd, protect, context, limit, streams=None): start sending on a connected socket. */
static PyObject *
Sender_open(Sender *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"fd", "protect", "context", "limit", "streams", NULL};
    int fd;
    unsigned long long protect, context, get = 0, remove = 0, insert = 0;
    Py_ssize_t limit;
    PyObject *streams = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iKKn|O", keywords, &fd, &protect, &context,
                                     &limit, &streams))
        return NULL;
    if (streams != Py_None &&
        !PyArg_ParseTuple(streams, "KKK;streams is (get, remove, insert)", &get, &remove, &insert))
        return NULL;
    if (fd < 0 || protect == 0 || context == 0) {
        PyErr_SetString(PyExc_ValueError, "a Sender needs a descriptor, srtp_protect and a context");
        return NULL;
    }
    if (limit < 12 || limit > BUFFER_SIZE - 256) {
        PyErr_SetString(PyExc_ValueError, "limit must leave room for libsrtp's trailer");
        return NULL;
    }
    self->fd = fd;
    self->protect = (protect_fn)(uintptr_t)protect;
    self->context = (void *)(uintptr_t)context;
    self->limit = limit;
    self->pending = 0;
    self->list_get = get && remove && insert ? (list_get_fn)(uintptr_t)get : NULL;
    self->list_remove = (list_remove_fn)(uintptr_t)remove;
    self->list_insert = (list_insert_fn)(uintptr_t)insert;
    self->front = NULL;
    Py_RETURN_NONE;
}

/* Forget the descriptor and context: every send is CHECKED until the next open(). */
static void
sender_reset(Sender *self)
{
    self->fd = -1;
    self->context = NULL;
    self->list_get = NULL;
    self->front = NULL;
    self->pending = 0;
}

/* Sender() is closed until open(); Sender(fd, ...) opens at once. */
static int
Sender_init(Sender *self, PyObject *args, PyObject *kwds)
{
    sender_reset(self);
    if (PyTuple_GET_SIZE(args) == 0 && (kwds == NULL || PyDict_GET_SIZE(kwds) == 0))
        return 0;
    PyObject *done = Sender_open(self, args, kwds);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
}

/* Bring the stream of ``ssrc`` (network order) to the front of the session's list.
 *
 * libsrtp finds a packet's stream by walking a linked list of the session's streams,
 * newest first.  A subscriber's session holds one stream per SSRC it was ever sent: some
 * fifty in a room of 50, most of them microphones that have been silent for minutes, and
 * each a cold cache line.  That walk was 7 % of a media node's CPU.  Moving the stream
 * just used to the front keeps the streams in use (a few videos, the loudest voices) at
 * the head, so both this walk and srtp_protect's own stop after a few steps.  Only the
 * list's order changes; each stream keeps its rollover counter and replay window. */
static inline void
reorder(Sender *self, uint32_t ssrc)
{
    void *list = *(void **)self->context;
    void *stream = self->list_get(list, ssrc);
    if (stream != NULL && stream != self->front) {
        self->list_remove(list, stream);
        self->list_insert(list, stream);
        self->front = stream;
    }
}

static inline void
put16(unsigned char *at, unsigned long value)
{
    at[0] = (unsigned char)(value >> 8);
    at[1] = (unsigned char)value;
}

static inline void
put32(unsigned char *at, unsigned long value)
{
    at[0] = (unsigned char)(value >> 24);
    at[1] = (unsigned char)(value >> 16);
    at[2] = (unsigned char)(value >> 8);
    at[3] = (unsigned char)value;
}

void
renumber_into(unsigned char *at, const Renumber *renumber)
{
    if (renumber->pid_offset >= 0) {
        if (renumber->pid_bits == 15) {
            at[renumber->pid_offset] = (unsigned char)(0x80 | (renumber->pid >> 8));
            at[renumber->pid_offset + 1] = (unsigned char)renumber->pid;
        } else {
            at[renumber->pid_offset] = (unsigned char)(renumber->pid & 0x7F);
        }
    }
    if (renumber->tl0_offset >= 0)
        at[renumber->tl0_offset] = (unsigned char)renumber->tl0;
}

int
sender_forward(Sender *self, unsigned long second, unsigned long seq, unsigned long ts,
               unsigned long ssrc, const char *ext, Py_ssize_t ext_len, const char *body,
               Py_ssize_t body_len, const Renumber *renumber)
{
    self->pending = 0;
    Py_ssize_t size = 12 + ext_len + body_len;
    if (self->fd < 0 || size > self->limit)
        return CHECKED;
    unsigned char *out = self->buffer;
    out[0] = ext_len ? 0x90 : 0x80;
    out[1] = (unsigned char)second;
    put16(out + 2, seq);
    put32(out + 4, ts);
    put32(out + 8, ssrc);
    memcpy(out + 12, ext, (size_t)ext_len);
    memcpy(out + 12 + ext_len, body, (size_t)body_len);
    if (renumber != NULL)
        renumber_into(out + 12 + ext_len, renumber);
    int length = (int)size;
    if (self->list_get != NULL)
        reorder(self, htonl((uint32_t)ssrc));
    if (self->protect(self->context, out, &length) != 0)
        return CHECKED;
    ssize_t sent;
    do {
        sent = send(self->fd, out, (size_t)length, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        self->pending = length;
        return PENDING;
    }
    /* Sent, or lost to an error of the peer's port (ICMP): lost, as a datagram may be. */
    return SENT;
}

/* send(second, seq, ts, ssrc, extension, body) -> SENT | CHECKED | PENDING
 *
 * second: the header's second byte (marker << 7 | payload type); extension: a whole
 * header extension block or b""; body: the payload. */
static PyObject *
Sender_send(Sender *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "send(second, seq, ts, ssrc, extension, body)");
        return NULL;
    }
    PyObject *extension = args[4], *body = args[5];
    if (!PyBytes_CheckExact(extension) || !PyBytes_CheckExact(body)) {
        PyErr_SetString(PyExc_TypeError, "extension and body must be bytes");
        return NULL;
    }
    unsigned long second = PyLong_AsUnsignedLongMask(args[0]);
    unsigned long seq = PyLong_AsUnsignedLongMask(args[1]);
    unsigned long ts = PyLong_AsUnsignedLongMask(args[2]);
    unsigned long ssrc = PyLong_AsUnsignedLongMask(args[3]);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(sender_forward(self, second, seq, ts, ssrc,
                                          PyBytes_AS_STRING(extension), PyBytes_GET_SIZE(extension),
                                          PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), NULL));
}

static PyObject *
Sender_pending(Sender *self, PyObject *Py_UNUSED(ignored))
{
    if (self->pending == 0)
        Py_RETURN_NONE;
    PyObject *datagram = PyBytes_FromStringAndSize((const char *)self->buffer, self->pending);
    self->pending = 0;
    return datagram;
}

static PyObject *
Sender_close(Sender *self, PyObject *Py_UNUSED(ignored))
{
    sender_reset(self);
    Py_RETURN_NONE;
}

static PyObject *
Sender_get_closed(Sender *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->fd < 0);
}

static PyMethodDef Sender_methods[] = {
    {"open", (PyCFunction)(void (*)(void))Sender_open, METH_VARARGS | METH_KEYWORDS,
     "open(fd, protect, context, limit, streams=None): send on a connected socket's "
     "descriptor, protecting with libsrtp's srtp_protect on a session's context."},
    {"send", (PyCFunction)(void (*)(void))Sender_send, METH_FASTCALL,
     "Protect and send one packet: SENT (0), CHECKED (1: take the checked path) or "
     "PENDING (2: the socket is full, pending() holds the datagram)."},
    {"pending", (PyCFunction)Sender_pending, METH_NOARGS,
     "The protected datagram a PENDING send left (once), else None."},
    {"close", (PyCFunction)Sender_close, METH_NOARGS,
     "Forget the descriptor and context: every later send is CHECKED."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Sender_getset[] = {
    {"closed", (getter)Sender_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._rtpsend.Sender",
    .tp_doc = "Protects and sends forwarded RTP packets on one connected socket.",
    .tp_basicsize = sizeof(Sender),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sender_init,
    .tp_methods = Sender_methods,
    .tp_getset = Sender_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "media._rtpsend",
    .m_doc = "The compiled sending edge of forwarded RTP (see media.rtp_writer).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__rtpsend(void)
{
    if (pace_intern() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &SenderType) < 0 || PyModule_AddType(m, &LaneType) < 0 ||
        PyModule_AddType(m, &PaceClockType) < 0 ||
        PyModule_AddIntConstant(m, "SENT", SENT) < 0 ||
        PyModule_AddIntConstant(m, "CHECKED", CHECKED) < 0 ||
        PyModule_AddIntConstant(m, "PENDING", PENDING) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
