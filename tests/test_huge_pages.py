"""Python's object arenas on transparent huge pages (signaling.huge_pages and
signaling/_arenas.c), in a fresh interpreter of their own: new arenas come from the huge
page reservations and are backed by huge pages where the kernel allows them, freed arenas
give their memory back and are reused, and objects living there behave as any other."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from signaling import huge_pages

SCRIPT = textwrap.dedent(
    """
    import gc, json
    from signaling import huge_pages

    def rollup(field):
        for line in open("/proc/self/smaps_rollup"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    enabled = huge_pages.enable()
    start = huge_pages.arenas()
    objects = [[n, str(n)] for n in range(600_000)]  # about 100 MB of small objects
    grown = huge_pages.arenas()
    huge, rss_full = rollup("AnonHugePages"), rollup("Rss")
    intact = all(o[0] == n and o[1] == str(n) for n, o in enumerate(objects))
    del objects
    gc.collect()
    rss_freed = rollup("Rss")
    again = [[n, str(n)] for n in range(600_000)]
    print(json.dumps({
        "enabled": enabled, "start": start, "grown": grown, "huge": huge,
        "rss_full": rss_full, "rss_freed": rss_freed, "intact": intact,
        "reused": huge_pages.arenas() - grown, "again": len(again),
    }))
    """
)


def run() -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout)


def test_new_arenas_come_from_huge_pages_and_go_back_when_freed():
    result = run()
    assert result["intact"] and result["again"] == 600_000
    if not huge_pages.kernel_allows():  # transparent huge pages off: nothing installed
        assert result["enabled"] is False and result["grown"] == 0
        return
    assert result["enabled"] is True
    assert result["grown"] - result["start"] >= 60  # the objects' arenas, 1 MiB each
    assert result["huge"] >= 32 << 20  # backed by 2 MiB pages
    # pymalloc freed the emptied arenas: their memory went back to the kernel ...
    assert result["rss_full"] - result["rss_freed"] >= 50 << 20
    # ... and their addresses served the next objects without new reservations
    assert result["reused"] <= 8
