/* What media/_rtpsend.c (the Sender: header, SRTP, send) shares with media/_lane.c (a
 * steady subscriber's per-packet step, which ends in a Sender's send). */
#ifndef SWITCHBOARD_RTPSEND_H
#define SWITCHBOARD_RTPSEND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Sent: nothing left for Python.  Checked: take the checked path (it raises or drops as
 * the pure-Python writer does).  Pending: the socket's buffer is full, pending() holds the
 * protected datagram for the event loop's queue. */
enum { SENT = 0, CHECKED = 1, PENDING = 2 };

#define BUFFER_SIZE 2048

/* libsrtp 2's srtp_protect: (srtp_t ctx, void *rtp_hdr, int *len_ptr) -> srtp_err_status_t */
typedef int (*protect_fn)(void *ctx, void *packet, int *length);
/* libsrtp >= 2.5's stream list (srtp_stream_list_get, _remove, _insert); the list is the
 * first member of a session's context. */
typedef void *(*list_get_fn)(void *list, uint32_t ssrc);
typedef void (*list_remove_fn)(void *list, void *stream);
typedef int (*list_insert_fn)(void *list, void *stream);

typedef struct {
    PyObject_HEAD
    int fd;           /* -1 while closed: every send is CHECKED */
    protect_fn protect;
    void *context;
    Py_ssize_t limit; /* the longest packet protected here, leaving room for the trailer */
    int pending;      /* length of the protected datagram left in buffer, or 0 */
    /* Move-to-front of the session's streams (see reorder()), or NULL. */
    list_get_fn list_get;
    list_remove_fn list_remove;
    list_insert_fn list_insert;
    void *front; /* the stream this sender last moved to the front */
    unsigned char buffer[BUFFER_SIZE];
} Sender;

/* Bytes of a VP8 payload descriptor to overwrite once the body is in the send buffer
 * (the subscriber's PictureID and TL0PICIDX), where a steady subscriber's numbers differ
 * from the publisher's.  An offset of -1 leaves that field alone. */
typedef struct {
    Py_ssize_t pid_offset;
    int pid_bits;
    long pid;
    Py_ssize_t tl0_offset;
    long tl0;
} Renumber;

extern PyTypeObject SenderType;

/* One forwarded packet: header, body (renumbered if ``renumber`` is not NULL), SRTP, send.
 * Returns SENT, CHECKED or PENDING; never raises. */
int sender_forward(Sender *self, unsigned long second, unsigned long seq, unsigned long ts,
                   unsigned long ssrc, const char *ext, Py_ssize_t ext_len, const char *body,
                   Py_ssize_t body_len, const Renumber *renumber);

/* Write ``renumber``'s fields into a copy of a VP8 payload (``at`` is its first byte). */
void renumber_into(unsigned char *at, const Renumber *renumber);

/* A subscriber's abs-send-time pacing clock (media/_pace.c). */
typedef struct {
    PyObject_HEAD
    PyObject *allocator; /* media.bandwidth.Allocator: the estimate in force */
    double factor;       /* the pace, as a multiple of the estimate */
    double at;           /* the last stamp, in seconds of wall time */
    unsigned char prefix[5];
} PaceClock;

/* The module's types: this Sender's, media/_lane.c's Lane, media/_pace.c's PaceClock. */
extern PyTypeObject LaneType, PaceClockType;

/* The 8-byte extension block for a packet of ``size`` bytes leaving now, into ``out``;
 * -1 with an exception set if the allocator cannot be read. */
int pace_stamp(PaceClock *self, Py_ssize_t size, unsigned char *out);

/* Intern the allocator's attribute names a PaceClock reads (once, at import); -1 on
 * error. */
int pace_intern(void);

#endif
