/* A subscriber slot's numbering in C (media/numbering.py's Lane): what media/_lane.c's
 * steady step and media/_lane_state.c's attributes and NACK record share. */
#ifndef SWITCHBOARD_LANE_H
#define SWITCHBOARD_LANE_H

#include "_rtpsend.h"

#include <structmember.h>

#define SEQ_MASK 0xFFFFUL
#define TS_MASK 0xFFFFFFFFUL
/* Sequence numbers remembered for NACKs (media/sent_ring.py's RING). */
#define RING 512
#define PID_MOD_15 (1L << 15)

/* What on_layer_packet tells every slot about one packet, once (PublishedTrack's
 * Arrival.facts): indexes into that tuple. */
enum {
    F_LAYER, F_SEQ, F_RAW_SEQ, F_TIMESTAMP, F_MARKER, F_PAYLOAD, F_NOW, F_LEVEL,
    F_HAS_DESC, F_PID, F_PID_BITS, F_PID_OFFSET, F_TL0, F_TL0_OFFSET, F_COUNT
};

typedef struct {
    PyObject_HEAD
    PyObject *layer;  /* the layer offer() may forward, or None */
    PyObject *run;    /* the run being sent (media.sent_ring.Run), or None */
    long first_in, ts_offset;               /* the run's */
    long pid_delta, tl0_delta, pid_mod;     /* the run's VP8 renumbering */
    long seq_offset, last_seq_out, last_ts_out, last_in_ts;
    double last_sent_at;
    long long packets_out, bytes_out;
    long payload_type; /* -1: not negotiated */
    unsigned long ssrc;
    long last_pid, last_tl0; /* the last PictureID and TL0PICIDX sent; -1: none */
    long level_id;           /* the audio-level extension's id; 0: not negotiated */
    char vp8;                /* rewrite VP8 descriptors */
    PyObject *stamp;  /* the send-time or sequence stamp for video, or None */
    PyObject *sender; /* the transport's Sender (or, in tests, anything with send()), or None */
    PyObject *writer; /* the transport's writer: what the Sender could not send goes there */
    /* What was sent, for NACKs (allocated when ``remember`` is set). */
    int32_t *ring_out;
    uint16_t *ring_in;
    PyObject **ring_run;
} Lane;

static inline int
present(PyObject *o)
{
    return o != NULL && o != Py_None;
}

static inline long
modulo(long a, long m)
{
    long r = a % m;
    return r < 0 ? r + m : r;
}

/* The NACK record (media/_lane_state.c). */
void ring_put(Lane *self, long out_seq, long in_seq, PyObject *run);
void ring_free(Lane *self);
PyObject *Lane_put(Lane *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Lane_get(Lane *self, PyObject *arg);

/* The attributes Python reads and writes (media/_lane_state.c). */
extern PyMemberDef Lane_members[];
extern PyGetSetDef Lane_getset[];

#endif
