"""State the Partner Center side shares across instances: a named record, and a lease on it.

The record lives in the store (the ledger's table), which this room may not import: :class:`SharedState` is the
interface it needs, and ``shared/upgrades/runtime.py`` wires the store's implementation in
(:class:`shared.store.shared_state.TableSharedState`). Without storage, :class:`NoSharedState` records nothing
and every lease is granted: one process has no one to share with.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol


class SharedState(Protocol):
    def read(self, name: str) -> dict[str, Any] | None:
        """The record ``name`` (its fields, without the lease's), None when there is none. Raises
        :class:`~shared.errors.StorageUnavailableError` when it cannot be read."""
        ...

    def write(self, name: str, fields: Mapping[str, Any]) -> None:
        """Merge ``fields`` (text, booleans, numbers) into the record ``name``, creating it. Raises
        :class:`~shared.errors.StorageUnavailableError` when it cannot be written."""
        ...

    def acquire(self, name: str, holder: str, *, now: datetime, seconds: float) -> bool:
        """Take the lease on ``name`` for ``seconds`` from ``now``: True for ``holder`` alone until it is released
        or lapses, whichever instance asks. Raises :class:`~shared.errors.StorageUnavailableError`."""
        ...

    def release(self, name: str, holder: str) -> None:
        """Give the lease back if ``holder`` still has it; a failure is left to the lease's lapse."""
        ...


class NoSharedState:
    """No storage: nothing is recorded, and the one process takes every lease."""

    def read(self, name: str) -> dict[str, Any] | None:
        return None

    def write(self, name: str, fields: Mapping[str, Any]) -> None:
        return None

    def acquire(self, name: str, holder: str, *, now: datetime, seconds: float) -> bool:
        return True

    def release(self, name: str, holder: str) -> None:
        return None
