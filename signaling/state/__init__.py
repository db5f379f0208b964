"""Hub state behind one interface (:class:`HubState`), with an in-memory implementation."""

from signaling.state.base import HubState
from signaling.state.memory import MemoryState

__all__ = ["HubState", "MemoryState"]
