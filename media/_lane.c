/* A steady subscriber's per-packet step, compiled (see media/numbering.py).
 *
 * In a room of 50 each received packet is offered to some fifty subscribers' slots, and
 * for almost every one of them the step is the same: the packet is of the layer the
 * slot is steady on, so its sequence number and timestamp are shifted by the slot's
 * offsets, its VP8 PictureID and TL0PICIDX by the slot's renumbering, what was sent is
 * remembered for NACKs, a send time or audio level goes in the header, and the Sender
 * protects and sends it.  In Python that step was about a quarter of a media node's CPU,
 * spread over a dozen attribute reads and small calls per offer; here it is one call on
 * integers held in this struct.
 *
 * A Lane holds the numbering state itself: media/send_slot.py reads and writes the same
 * fields as attributes, so everything that is not the steady step (layer switches, a
 * picture dropped for a lower frame rate, retransmissions, padding, reports, TURN
 * relays) stays in Python, working on the same numbers.  offer() forwards only when the
 * slot set ``layer`` (it does so only when that step is all there is to do) and the
 * packet is of that layer; otherwise it changes nothing and returns False, and the
 * slot's Python step takes the packet.
 */

#include "_lane.h"

static int
Lane_init(Lane *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", keywords))
        return -1;
    self->payload_type = -1;
    self->last_pid = self->last_tl0 = -1;
    self->pid_mod = PID_MOD_15;
    return 0;
}

static int
Lane_traverse(Lane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->layer);
    Py_VISIT(self->run);
    Py_VISIT(self->stamp);
    Py_VISIT(self->sender);
    Py_VISIT(self->writer);
    if (self->ring_run != NULL) {
        for (int i = 0; i < RING; i++)
            Py_VISIT(self->ring_run[i]);
    }
    return 0;
}

static int
Lane_clear(Lane *self)
{
    Py_CLEAR(self->layer);
    Py_CLEAR(self->run);
    Py_CLEAR(self->stamp);
    Py_CLEAR(self->sender);
    Py_CLEAR(self->writer);
    ring_free(self); /* the NACK record's runs with it */
    return 0;
}

static void
Lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The payload as bytes of its own, renumbered, or the shared one when nothing shifts. */
static PyObject *
body_of(PyObject *payload, const Renumber *rewrite)
{
    if (rewrite == NULL)
        return Py_NewRef(payload);
    PyObject *body = PyBytes_FromStringAndSize(PyBytes_AS_STRING(payload),
                                               PyBytes_GET_SIZE(payload));
    if (body != NULL)
        renumber_into((unsigned char *)PyBytes_AS_STRING(body), rewrite);
    return body;
}

/* send() on what is not a compiled Sender (a test's recording one): the same arguments,
 * as Python objects.  SENT, CHECKED, PENDING, or -1 with an exception set. */
static int
send_through(PyObject *sender, unsigned long second, unsigned long seq, unsigned long ts,
             unsigned long ssrc, PyObject *ext, PyObject *body)
{
    PyObject *result = PyObject_CallMethod(sender, "send", "kkkkOO", second, seq, ts, ssrc, ext,
                                           body);
    if (result == NULL)
        return -1;
    long done = PyLong_AsLong(result);
    Py_DECREF(result);
    return done == -1 && PyErr_Occurred() ? -1 : (int)done;
}

/* The step itself, sending through ``sender`` and ``writer`` (references of its own). */
static PyObject *
lane_step(Lane *self, PyObject *facts, PyObject *sender, PyObject *writer)
{
    if (!PyTuple_CheckExact(facts) || PyTuple_GET_SIZE(facts) != F_COUNT) {
        PyErr_SetString(PyExc_TypeError, "offer() takes an Arrival's facts");
        return NULL;
    }
#define FACT(i) PyTuple_GET_ITEM(facts, i)
    if (!present(self->layer) || FACT(F_LAYER) != self->layer || !present(self->run) ||
        self->payload_type < 0)
        Py_RETURN_FALSE;
    int compiled = Py_IS_TYPE(sender, &SenderType);
    if (compiled && ((Sender *)sender)->fd < 0)
        Py_RETURN_FALSE; /* not connected yet, or gone: the writer's checked path */
    PyObject *payload = FACT(F_PAYLOAD);
    if (!PyBytes_CheckExact(payload)) {
        PyErr_SetString(PyExc_TypeError, "the payload must be bytes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(payload);
    long in_seq = PyLong_AsLong(FACT(F_SEQ));
    long raw_seq = PyLong_AsLong(FACT(F_RAW_SEQ));
    unsigned long timestamp = PyLong_AsUnsignedLongMask(FACT(F_TIMESTAMP));
    int marker = PyObject_IsTrue(FACT(F_MARKER));
    double now = PyFloat_AsDouble(FACT(F_NOW));
    long level = PyLong_AsLong(FACT(F_LEVEL));
    long has_desc = PyLong_AsLong(FACT(F_HAS_DESC));
    if (PyErr_Occurred())
        return NULL;
    if ((unsigned long)(in_seq - self->first_in) & SEQ_MASK & ~0x7FFFUL)
        Py_RETURN_TRUE; /* reordered from before the keyframe this run starts at */
    long seq = (long)((unsigned long)(in_seq + self->seq_offset) & SEQ_MASK);
    int newest = seq != self->last_seq_out &&
                 ((unsigned long)(seq - self->last_seq_out) & SEQ_MASK) < 0x8000;
    Renumber renumber = {-1, 0, 0, -1, 0};
    const Renumber *rewrite = NULL;
    if (self->vp8 && has_desc) {
        long pid = PyLong_AsLong(FACT(F_PID)), tl0 = PyLong_AsLong(FACT(F_TL0));
        long pid_bits = PyLong_AsLong(FACT(F_PID_BITS));
        Py_ssize_t pid_offset = PyLong_AsSsize_t(FACT(F_PID_OFFSET));
        Py_ssize_t tl0_offset = PyLong_AsSsize_t(FACT(F_TL0_OFFSET));
        if (PyErr_Occurred())
            return NULL;
        if (pid >= 0)
            pid = modulo(pid + self->pid_delta, self->pid_mod);
        if (tl0 >= 0)
            tl0 = modulo(tl0 + self->tl0_delta, 256);
        if (newest) {
            if (pid >= 0)
                self->last_pid = pid;
            if (tl0 >= 0)
                self->last_tl0 = tl0;
        }
        if (self->pid_delta != 0 || self->tl0_delta != 0) {
            if ((pid >= 0 && pid_offset + (pid_bits == 15) >= size) ||
                (tl0 >= 0 && tl0_offset >= size)) {
                PyErr_SetString(PyExc_ValueError, "a descriptor beyond its payload");
                return NULL;
            }
            renumber.pid_offset = pid >= 0 ? pid_offset : -1;
            renumber.pid_bits = (int)pid_bits;
            renumber.pid = pid;
            renumber.tl0_offset = tl0 >= 0 ? tl0_offset : -1;
            renumber.tl0 = tl0;
            rewrite = &renumber;
        }
    }
    unsigned long ts = (timestamp + (unsigned long)self->ts_offset) & TS_MASK;
    if (newest) {
        self->last_seq_out = seq;
        self->last_ts_out = (long)ts;
        self->last_in_ts = (long)timestamp;
        self->last_sent_at = now;
    }
    if (self->ring_run != NULL)
        ring_put(self, seq, raw_seq, self->run);
    long pt = self->payload_type; /* read before Python may run (a stamp) */
    self->packets_out += 1;
    self->bytes_out += size;
    /* The header extension: a pacing clock's send time or the audio level, written here;
     * another stamp (transport-cc's sequence) is called.  As bytes only where Python
     * needs it. */
    unsigned char block[8];
    const char *ext_data = "";
    Py_ssize_t ext_len = 0;
    PyObject *ext = NULL;
    PyObject *stamp = self->stamp;
    if (present(stamp)) {
        PyObject *clock = PyCFunction_Check(stamp) ? PyCFunction_GET_SELF(stamp) : NULL;
        if (clock != NULL && Py_IS_TYPE(clock, &PaceClockType)) {
            if (pace_stamp((PaceClock *)clock, size, block) < 0)
                return NULL;
            ext_data = (const char *)block;
            ext_len = 8;
        } else {
            PyObject *length = PyLong_FromSsize_t(size);
            if (length == NULL)
                return NULL;
            Py_INCREF(stamp); /* Python runs: it may rebind the slot's stamp meanwhile */
            ext = PyObject_CallOneArg(stamp, length);
            Py_DECREF(stamp);
            Py_DECREF(length);
            if (ext == NULL)
                return NULL;
            if (!PyBytes_CheckExact(ext)) {
                Py_DECREF(ext);
                PyErr_SetString(PyExc_TypeError, "a stamp must be bytes");
                return NULL;
            }
            ext_data = PyBytes_AS_STRING(ext);
            ext_len = PyBytes_GET_SIZE(ext);
        }
    } else if (self->level_id > 0 && level >= 0) {
        /* RFC 8285's one-byte form: 0xBEDE, one word; the id and length 0, the level. */
        const unsigned char level_block[8] = {
            0xBE, 0xDE, 0, 1, (unsigned char)(self->level_id << 4), (unsigned char)level, 0, 0};
        memcpy(block, level_block, sizeof block);
        ext_data = (const char *)block;
        ext_len = 8;
    }
    unsigned long second = ((unsigned long)(marker ? 1 : 0) << 7) | (unsigned long)pt;
    PyObject *body = NULL, *result = NULL;
    int done;
    if (compiled) {
        done = sender_forward((Sender *)sender, second, (unsigned long)seq, ts, self->ssrc,
                              ext_data, ext_len, PyBytes_AS_STRING(payload), size, rewrite);
        if (done == SENT) {
            Py_XDECREF(ext);
            Py_RETURN_TRUE;
        }
    }
    /* From here Python needs the extension and the body as bytes. */
    if (ext == NULL && (ext = PyBytes_FromStringAndSize(ext_data, ext_len)) == NULL)
        goto out;
    if ((body = body_of(payload, rewrite)) == NULL)
        goto out;
    if (!compiled &&
        (done = send_through(sender, second, (unsigned long)seq, ts, self->ssrc, ext, body)) < 0)
        goto out;
    if (done == SENT)
        result = Py_NewRef(Py_None);
    else if (done == PENDING) /* the socket is full: the event loop's queue takes it */
        result = PyObject_CallMethod(writer, "send_pending", NULL);
    else /* too big, refused by libsrtp: the writer's checked path (it raises or drops) */
        result = PyObject_CallMethod(writer, "forward", "kkkkOO", second, (unsigned long)seq, ts,
                                     self->ssrc, ext, body);
out:
#undef FACT
    Py_XDECREF(ext);
    Py_XDECREF(body);
    if (result == NULL)
        return NULL;
    if (result == Py_None) {
        Py_DECREF(result);
        Py_RETURN_TRUE;
    }
    return result; /* an awaitable the slot queues */
}

/* offer(facts) -> True (forwarded, or not this slot's to send), False (the slot's Python
 * step must take it: nothing was changed), or an awaitable the slot queues (a write the
 * transport could not make at once). */
static PyObject *
Lane_offer(Lane *self, PyObject *facts)
{
    /* The step may call into Python (a stamp that is not a PaceClock's, the writer's
     * checked path), which could rebind the slot's writer and so these: it holds its own
     * references to them. */
    if (!present(self->sender) || !present(self->writer))
        Py_RETURN_FALSE;
    PyObject *sender = Py_NewRef(self->sender), *writer = Py_NewRef(self->writer);
    PyObject *result = lane_step(self, facts, sender, writer);
    Py_DECREF(sender);
    Py_DECREF(writer);
    return result;
}

static PyMethodDef Lane_methods[] = {
    {"offer", (PyCFunction)Lane_offer, METH_O,
     "Forward a packet of the steady layer: True, False (the Python step takes it), or an "
     "awaitable to queue."},
    {"put", (PyCFunction)(void (*)(void))Lane_put, METH_FASTCALL,
     "put(out_seq, in_seq, run): remember what was sent."},
    {"get", (PyCFunction)Lane_get, METH_O, "get(out_seq) -> (in_seq, run) or None."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._rtpsend.Lane",
    .tp_doc = "One subscriber slot's numbering, and its steady per-packet step.",
    .tp_basicsize = sizeof(Lane),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_members = Lane_members,
    .tp_getset = Lane_getset,
    .tp_methods = Lane_methods,
};
