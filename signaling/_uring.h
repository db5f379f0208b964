/* A minimal io_uring submission ring for the fan-out's sends (signaling/_uring.c). */
#ifndef SIGNALING_URING_H
#define SIGNALING_URING_H

#include <stddef.h>

/* How many sends one submission carries at most. */
#define URING_BATCH 256

/* A send's result before the kernel ran it (it was never submitted). */
#define URING_NOT_RUN (-0x7fffffff)

/* Set the ring up if it is not (again after a fork): 1 ready, 0 unavailable here
 * (an old kernel, io_uring turned off, a seccomp filter refusing it). */
int uring_ready(void);

/* Queue a send of ``size`` bytes at ``data`` on ``fd`` as entry ``index`` of the batch. */
void uring_queue_send(unsigned index, int fd, const void *data, size_t size);

/* Submit the ``count`` queued sends in one system call and put each one's result (bytes
 * taken, -errno, or URING_NOT_RUN if the kernel never took it) at ``results[index]``.
 * Every send is non-blocking, so all that were taken have completed when this returns. */
void uring_run(unsigned count, int *results);

/* How many sends the kernel took without finishing them at once (0 where MSG_DONTWAIT
 * makes io_uring complete every send as it is submitted, as on the kernels tested). */
unsigned long uring_parked(void);

#endif
