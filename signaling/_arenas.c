/* Python's object arenas on transparent huge pages (signaling/huge_pages.py says when).
 *
 * A broadcast reads each recipient's connection object, its outbox list and its
 * transport: a few objects per recipient, scattered over a heap of a hundred megabytes
 * at a thousand connections. With 4 KiB pages nearly every one of those reads also misses
 * the TLB, and under a hypervisor a miss walks two sets of page tables. pymalloc takes
 * its arenas (1 MiB) from mmap one by one, so they never sit in a 2 MiB page; this
 * allocator hands them out of larger reservations aligned to 2 MiB and marked
 * MADV_HUGEPAGE, where the kernel backs them with huge pages when the system allows it
 * (``transparent_hugepage/enabled`` set to ``madvise`` or ``always``).
 *
 * An arena pymalloc frees is given back to the kernel (MADV_DONTNEED) and its address is
 * kept for the next one. Arenas that existed before this allocator was installed, and
 * requests of any other size, go to the allocator that was there before.
 */
#include "_fanout.h"

#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)
#define RESERVATION ((size_t)64 << 20) /* 64 arenas of 1 MiB, 32 huge pages */
#define MAX_RESERVATIONS 256           /* 16 GiB of arenas */
#define MAX_SPARE 1024                 /* freed arenas kept for reuse */

static PyObjectArenaAllocator previous;
static int installed = 0;
static size_t arena_size = 0;

static char *reservations[MAX_RESERVATIONS];
static int nreservations = 0;
static char *next_free = NULL, *end = NULL; /* the unused part of the last reservation */
static void *spare[MAX_SPARE];
static int nspare = 0;
static unsigned long long huge_arenas = 0; /* arenas handed out of reservations */

static int ours(const char *p) {
    for (int i = 0; i < nreservations; i++)
        if (p >= reservations[i] && p < reservations[i] + RESERVATION)
            return 1;
    return 0;
}

/* A new reservation, 2 MiB-aligned and marked for huge pages: 0, or -1 (none left, or
 * the kernel refused). */
static int reserve(void) {
    if (nreservations == MAX_RESERVATIONS)
        return -1;
    size_t size = RESERVATION + HUGE_PAGE;
    char *raw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    char *base = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (base > raw)
        munmap(raw, (size_t)(base - raw));
    char *stop = base + RESERVATION;
    if (raw + size > stop)
        munmap(stop, (size_t)(raw + size - stop));
    madvise(base, RESERVATION, MADV_HUGEPAGE); /* a hint: refused, it is plain memory */
    reservations[nreservations++] = base;
    next_free = base;
    end = stop;
    return 0;
}

static void *arena_alloc(void *ctx, size_t size) {
    if (arena_size == 0 && size > 0 && RESERVATION % size == 0)
        arena_size = size;
    if (size != arena_size)
        return previous.alloc(previous.ctx, size);
    if (nspare > 0)
        return spare[--nspare];
    if ((next_free == NULL || next_free + size > end) && reserve() < 0)
        return previous.alloc(previous.ctx, size);
    void *arena = next_free;
    next_free += size;
    huge_arenas++;
    return arena;
}

static void arena_free(void *ctx, void *ptr, size_t size) {
    if (ptr == NULL)
        return;
    if (size != arena_size || !ours(ptr)) {
        previous.free(previous.ctx, ptr, size);
        return;
    }
    madvise(ptr, size, MADV_DONTNEED); /* the memory back to the kernel, the address kept */
    if (nspare < MAX_SPARE)
        spare[nspare++] = ptr;
}

PyObject *fanout_huge_arenas(PyObject *self, PyObject *unused) {
    if (!installed) {
        PyObjectArenaAllocator mine = {NULL, arena_alloc, arena_free};
        PyObject_GetArenaAllocator(&previous);
        PyObject_SetArenaAllocator(&mine);
        installed = 1;
    }
    Py_RETURN_NONE;
}

PyObject *fanout_huge_arena_count(PyObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(huge_arenas);
}
