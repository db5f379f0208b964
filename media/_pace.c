/* A subscriber's pacing clock for abs-send-time, compiled (media.bandwidth.SendClock).
 *
 * Every forwarded video packet carries the time a pacer would have sent it (see
 * SendClock's docstring for why): the later of now and the previous stamp plus the
 * packet's size at PACE_FACTOR times the subscriber's estimate.  In Python that was a
 * call per packet per subscriber, 5 % of a media node's CPU in a room of 50 once the
 * rest of the steady step was compiled (media/_lane.c); a Lane stamps through this clock
 * without leaving C.
 *
 * The estimate in force is the allocator's (media.bandwidth.Allocator.current(), read
 * here from the same attributes): ``estimate`` once one came, ``start`` before, and
 * ``start`` as well when the subscriber cannot report one or estimation is off.
 */

#include "_rtpsend.h"

#include <time.h>

static PyObject *str_estimating, *str_enabled, *str_estimate, *str_start;

/* The allocator's estimate in force, or -1 with an exception set. */
static double
estimate_in_force(PyObject *allocator)
{
    PyObject *start = PyObject_GetAttr(allocator, str_start);
    if (start == NULL)
        return -1;
    double value = PyFloat_AsDouble(start);
    Py_DECREF(start);
    if (value == -1 && PyErr_Occurred())
        return -1;
    PyObject *estimating = PyObject_GetAttr(allocator, str_estimating);
    PyObject *enabled = estimating ? PyObject_GetAttr(allocator, str_enabled) : NULL;
    PyObject *estimate = enabled ? PyObject_GetAttr(allocator, str_estimate) : NULL;
    double result = value;
    if (estimate == NULL) {
        result = -1;
    } else {
        int on = PyObject_IsTrue(estimating), allowed = on > 0 ? PyObject_IsTrue(enabled) : 0;
        if (on < 0 || allowed < 0) {
            result = -1;
        } else if (on && allowed && estimate != Py_None) {
            double reported = PyFloat_AsDouble(estimate);
            if (reported == -1 && PyErr_Occurred())
                result = -1;
            else if (reported != 0) /* Python's ``current() or start`` */
                result = reported;
        }
    }
    Py_XDECREF(estimating);
    Py_XDECREF(enabled);
    Py_XDECREF(estimate);
    return result;
}

int
pace_stamp(PaceClock *self, Py_ssize_t size, unsigned char *out)
{
    if (self->allocator == NULL) {
        PyErr_SetString(PyExc_ValueError, "a PaceClock needs an allocator");
        return -1;
    }
    double rate = estimate_in_force(self->allocator);
    if (rate < 0)
        return -1;
    rate *= self->factor;
    if (rate <= 0) {
        PyErr_SetString(PyExc_ValueError, "a pacing rate must be positive");
        return -1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* time.time()'s clock: abs-send-time is wall time */
    double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    double next = self->at + (double)size * 8 / rate;
    self->at = now > next ? now : next;
    unsigned long value = (unsigned long)(long long)(self->at * (1 << 18)) & 0xFFFFFF;
    memcpy(out, self->prefix, 5);
    out[5] = (unsigned char)(value >> 16);
    out[6] = (unsigned char)(value >> 8);
    out[7] = (unsigned char)value;
    return 0;
}

static int
PaceClock_init(PaceClock *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"allocator", "ext_id", "factor", NULL};
    PyObject *allocator;
    int ext_id;
    double factor;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oid", keywords, &allocator, &ext_id, &factor))
        return -1;
    if (ext_id < 1 || ext_id > 14 || factor <= 0) {
        PyErr_SetString(PyExc_ValueError, "an extension id is 1-14 and the factor positive");
        return -1;
    }
    Py_INCREF(allocator);
    Py_XSETREF(self->allocator, allocator);
    self->factor = factor;
    self->at = 0;
    /* the one-byte extension block's fixed part: profile, length 1 word, id + length 3 */
    const unsigned char prefix[5] = {0xBE, 0xDE, 0, 1, (unsigned char)((ext_id << 4) | 2)};
    memcpy(self->prefix, prefix, 5);
    return 0;
}

static int
PaceClock_traverse(PaceClock *self, visitproc visit, void *arg)
{
    Py_VISIT(self->allocator);
    return 0;
}

static int
PaceClock_clear(PaceClock *self)
{
    Py_CLEAR(self->allocator);
    return 0;
}

static void
PaceClock_dealloc(PaceClock *self)
{
    PyObject_GC_UnTrack(self);
    PaceClock_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* stamp(size) -> the extension block for a packet of ``size`` bytes leaving now. */
static PyObject *
PaceClock_stamp(PaceClock *self, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    unsigned char block[8];
    if (pace_stamp(self, size, block) < 0)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)block, 8);
}

static PyMethodDef PaceClock_methods[] = {
    {"stamp", (PyCFunction)PaceClock_stamp, METH_O,
     "stamp(size): the abs-send-time block for a packet of size bytes leaving now."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject PaceClockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "media._rtpsend.PaceClock",
    .tp_doc = "PaceClock(allocator, ext_id, factor): media.bandwidth.SendClock, compiled.",
    .tp_basicsize = sizeof(PaceClock),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PaceClock_init,
    .tp_dealloc = (destructor)PaceClock_dealloc,
    .tp_traverse = (traverseproc)PaceClock_traverse,
    .tp_clear = (inquiry)PaceClock_clear,
    .tp_methods = PaceClock_methods,
};

int
pace_intern(void)
{
    str_estimating = PyUnicode_InternFromString("estimating");
    str_enabled = PyUnicode_InternFromString("enabled");
    str_estimate = PyUnicode_InternFromString("estimate");
    str_start = PyUnicode_InternFromString("start");
    return str_estimating && str_enabled && str_estimate && str_start ? 0 : -1;
}
