"""Python's object heap on transparent huge pages (setting ``huge_pages``).

Why: a broadcast reads a few objects of every recipient (its connection, the list of its
outbox, its transport), scattered over a heap of about a hundred megabytes at a thousand
connections. With 4 KiB pages most of those reads also miss the TLB, and under a
hypervisor each miss walks two sets of page tables: profiles of a ``/socket.io/`` node at
24.5k deliveries a second put a fifth of its user time on the first read of each such
object. pymalloc maps its 1 MiB arenas one by one, which never fill a 2 MiB page; the
compiled allocator (``signaling/_arenas.c``) hands them out of 2 MiB-aligned reservations
marked ``MADV_HUGEPAGE``, so the kernel backs them with huge pages wherever
``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` or ``always``. Memory is
still given back when pymalloc frees an arena; what a node holds grows in 2 MiB steps
instead of 4 KiB ones.
"""

from __future__ import annotations

from pathlib import Path

try:
    from signaling._fanout import huge_arena_count as _huge_arena_count
    from signaling._fanout import huge_arenas as _huge_arenas
except ImportError:  # built without a compiler: pymalloc's own arenas
    _huge_arenas = _huge_arena_count = None

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def kernel_allows() -> bool:
    """Whether the kernel gives huge pages to a region marked for them (``madvise`` or
    ``always`` selected, not ``never``)."""
    try:
        return "[never]" not in THP_SETTING.read_text()
    except OSError:
        return False


def enable() -> bool:
    """From now on, new arenas come from huge-page reservations; ``False`` where that
    cannot help (no compiled module, or a kernel without transparent huge pages)."""
    if _huge_arenas is None or not kernel_allows():
        return False
    _huge_arenas()
    return True


def arenas() -> int:
    """Arenas taken from huge-page reservations in this process."""
    return _huge_arena_count() if _huge_arena_count is not None else 0
