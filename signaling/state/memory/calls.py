"""Call records in process memory."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

from signaling.state.calls import CallStore
from signaling.state.memory.records import update_copy
from signaling.state.models import Call

T = TypeVar("T")


class MemoryCalls(CallStore):
    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}
        self._user_calls: dict[str, set[str]] = {}

    async def create(self, call: Call) -> None:
        self._calls[call.id] = copy.deepcopy(call)
        for user_id in call.participants:
            self._user_calls.setdefault(user_id, set()).add(call.id)

    async def get(self, call_id: str) -> Call | None:
        call = self._calls.get(call_id)
        return copy.deepcopy(call) if call else None

    async def update(self, call_id: str, mutate: Callable[[Call], T]) -> tuple[Call, T]:
        return update_copy(self._calls, call_id, mutate)

    async def of_user(self, user_id: str) -> list[Call]:
        ids = self._user_calls.get(user_id, ())
        return [copy.deepcopy(self._calls[i]) for i in ids if i in self._calls]

    async def delete(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        for user_id in call.participants:
            ids = self._user_calls.get(user_id)
            if ids is not None:
                ids.discard(call_id)
                if not ids:
                    del self._user_calls[user_id]

    async def list_all(self) -> list[Call]:
        return [copy.deepcopy(c) for c in self._calls.values()]
