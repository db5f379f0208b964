"""Entry point: ``python -m benchmarks {signaling,media,room,cluster,connectivity} [options]``."""

from __future__ import annotations

import sys

from benchmarks import cluster, connectivity, media, room, signaling

SCENARIOS = {
    "signaling": signaling.main,
    "media": media.main,
    "room": room.main,
    "cluster": cluster.main,
    "connectivity": connectivity.main,
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in SCENARIOS:
        print(f"usage: python -m benchmarks {{{','.join(SCENARIOS)}}} [options]", file=sys.stderr)
        return 2
    return SCENARIOS[sys.argv[1]](sys.argv[2:])


raise SystemExit(main())
