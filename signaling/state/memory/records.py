"""Copy-on-write updates shared by the in-memory record stores (calls, rooms)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def update_copy(store: dict[str, R], key: str, mutate: Callable[[R], T]) -> tuple[R, T]:
    """Mutate a copy, so a mutation that raises halfway leaves the stored record intact."""
    stored = store.get(key)
    if stored is None:
        raise KeyError(key)
    work = copy.deepcopy(stored)
    result = mutate(work)
    store[key] = work
    return copy.deepcopy(work), result
