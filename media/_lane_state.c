/* A Lane's state as Python sees it, and its record of what was sent (media/_lane.c has
 * the steady step itself).
 *
 * media/send_slot.py reads and writes the numbering as attributes (members for the plain
 * numbers; getters and setters where Python says None, for the run, whose offsets and
 * renumbering are read once when it is set, and for the NACK record, allocated only for
 * video).  put() and get() are media/sent_ring.py's SentRing in C: the slot's Python
 * step and its retransmissions use them as they use a SentRing.
 */

#include "_lane.h"

void
ring_free(Lane *self)
{
    if (self->ring_run != NULL) {
        for (int i = 0; i < RING; i++)
            Py_CLEAR(self->ring_run[i]);
    }
    PyMem_Free(self->ring_out);
    PyMem_Free(self->ring_in);
    PyMem_Free(self->ring_run);
    self->ring_out = NULL;
    self->ring_in = NULL;
    self->ring_run = NULL;
}

void
ring_put(Lane *self, long out_seq, long in_seq, PyObject *run)
{
    int i = (int)(out_seq % RING);
    self->ring_out[i] = (int32_t)out_seq;
    self->ring_in[i] = (uint16_t)in_seq;
    Py_INCREF(run);
    Py_XSETREF(self->ring_run[i], run);
}

/* put(out_seq, in_seq, run): remember what a sequence number sent was (SentRing.put). */
PyObject *
Lane_put(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "put(out_seq, in_seq, run)");
        return NULL;
    }
    long out_seq = PyLong_AsLong(args[0]), in_seq = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (self->ring_run == NULL) {
        PyErr_SetString(PyExc_ValueError, "this lane remembers nothing (remember is False)");
        return NULL;
    }
    ring_put(self, modulo(out_seq, SEQ_MASK + 1), in_seq & SEQ_MASK, args[2]);
    Py_RETURN_NONE;
}

/* get(out_seq) -> (in_seq, run) or None (SentRing.get). */
PyObject *
Lane_get(Lane *self, PyObject *arg)
{
    long out_seq = PyLong_AsLong(arg);
    if (out_seq == -1 && PyErr_Occurred())
        return NULL;
    if (self->ring_run == NULL || out_seq < 0)
        Py_RETURN_NONE;
    int i = (int)(out_seq % RING);
    PyObject *run = self->ring_run[i];
    if (self->ring_out[i] != out_seq || run == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(lO)", (long)self->ring_in[i], run);
}

static PyObject *
Lane_get_remember(Lane *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->ring_run != NULL);
}

static int
Lane_set_remember(Lane *self, PyObject *value, void *Py_UNUSED(closure))
{
    int on = value != NULL && PyObject_IsTrue(value);
    if (on < 0)
        return -1;
    if (!on) {
        ring_free(self);
        return 0;
    }
    if (self->ring_run != NULL)
        return 0;
    self->ring_out = PyMem_Malloc(RING * sizeof *self->ring_out);
    self->ring_in = PyMem_Calloc(RING, sizeof *self->ring_in);
    self->ring_run = PyMem_Calloc(RING, sizeof *self->ring_run);
    if (self->ring_out == NULL || self->ring_in == NULL || self->ring_run == NULL) {
        ring_free(self);
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < RING; i++)
        self->ring_out[i] = -1;
    return 0;
}

static PyObject *
Lane_get_run(Lane *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->run != NULL ? self->run : Py_None);
}

/* The run's offsets and renumbering are read once here, not per packet (a Run is never
 * changed: a new one replaces it). */
static int
Lane_set_run(Lane *self, PyObject *value, void *Py_UNUSED(closure))
{
    long first_in = 0, ts_offset = 0, pid_delta = 0, tl0_delta = 0, pid_mod = PID_MOD_15;
    if (present(value)) {
        PyObject *first = PyObject_GetAttrString(value, "first_in");
        PyObject *offset = first ? PyObject_GetAttrString(value, "ts_offset") : NULL;
        PyObject *numbers = offset ? PyObject_GetAttrString(value, "numbers") : NULL;
        int ok = numbers != NULL;
        if (ok) {
            first_in = PyLong_AsLong(first);
            ts_offset = (long)PyLong_AsUnsignedLongMask(offset);
            if (numbers != Py_None &&
                !PyArg_ParseTuple(numbers, "lll;numbers is (pid_delta, tl0_delta, pid_mod)",
                                  &pid_delta, &tl0_delta, &pid_mod))
                ok = 0;
            if (PyErr_Occurred() || pid_mod <= 0)
                ok = 0;
        }
        Py_XDECREF(first);
        Py_XDECREF(offset);
        Py_XDECREF(numbers);
        if (!ok) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a run's PictureID modulus must be positive");
            return -1;
        }
    }
    self->first_in = first_in;
    self->ts_offset = ts_offset;
    self->pid_delta = pid_delta;
    self->tl0_delta = tl0_delta;
    self->pid_mod = pid_mod;
    Py_XINCREF(value);
    Py_XSETREF(self->run, value);
    return 0;
}

/* Integers where Python says None: payload_type, last_pid and last_tl0 (-1), level_id (0). */
#define OPTIONAL_INT(name, none)                                                              \
    static PyObject *Lane_get_##name(Lane *self, void *Py_UNUSED(closure))                    \
    {                                                                                         \
        if (self->name == (none))                                                             \
            Py_RETURN_NONE;                                                                   \
        return PyLong_FromLong(self->name);                                                   \
    }                                                                                         \
    static int Lane_set_##name(Lane *self, PyObject *value, void *Py_UNUSED(closure))         \
    {                                                                                         \
        if (!present(value)) {                                                                \
            self->name = (none);                                                              \
            return 0;                                                                         \
        }                                                                                     \
        long v = PyLong_AsLong(value);                                                        \
        if (v == -1 && PyErr_Occurred())                                                      \
            return -1;                                                                        \
        if (v < 0 || v == (none)) {                                                           \
            PyErr_SetString(PyExc_ValueError, #name " out of range");                         \
            return -1;                                                                        \
        }                                                                                     \
        self->name = v;                                                                       \
        return 0;                                                                             \
    }

OPTIONAL_INT(payload_type, -1)
OPTIONAL_INT(last_pid, -1)
OPTIONAL_INT(last_tl0, -1)
OPTIONAL_INT(level_id, 0)

PyMemberDef Lane_members[] = {
    {"layer", T_OBJECT, offsetof(Lane, layer), 0, "the layer offer() forwards, or None"},
    {"stamp", T_OBJECT, offsetof(Lane, stamp), 0, "the send-time stamp for video, or None"},
    {"sender", T_OBJECT, offsetof(Lane, sender), 0, "the transport's Sender, or None"},
    {"writer", T_OBJECT, offsetof(Lane, writer), 0, "the transport's writer, or None"},
    {"seq_offset", T_LONG, offsetof(Lane, seq_offset), 0, NULL},
    {"last_seq_out", T_LONG, offsetof(Lane, last_seq_out), 0, NULL},
    {"last_ts_out", T_LONG, offsetof(Lane, last_ts_out), 0, NULL},
    {"last_in_ts", T_LONG, offsetof(Lane, last_in_ts), 0, NULL},
    {"last_sent_at", T_DOUBLE, offsetof(Lane, last_sent_at), 0, NULL},
    {"packets_out", T_LONGLONG, offsetof(Lane, packets_out), 0, NULL},
    {"bytes_out", T_LONGLONG, offsetof(Lane, bytes_out), 0, NULL},
    {"ssrc", T_ULONG, offsetof(Lane, ssrc), 0, NULL},
    {"vp8", T_BOOL, offsetof(Lane, vp8), 0, "rewrite VP8 descriptors"},
    {NULL, 0, 0, 0, NULL},
};

PyGetSetDef Lane_getset[] = {
    {"run", (getter)Lane_get_run, (setter)Lane_set_run, "the run being sent", NULL},
    {"remember", (getter)Lane_get_remember, (setter)Lane_set_remember,
     "keep what was sent for NACKs (put, get)", NULL},
    {"payload_type", (getter)Lane_get_payload_type, (setter)Lane_set_payload_type, NULL, NULL},
    {"last_pid", (getter)Lane_get_last_pid, (setter)Lane_set_last_pid, NULL, NULL},
    {"last_tl0", (getter)Lane_get_last_tl0, (setter)Lane_set_last_tl0, NULL, NULL},
    {"level_id", (getter)Lane_get_level_id, (setter)Lane_set_level_id, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
