"""The inference exchanges in flight, so that shutdown can let them finish and then end the rest.

Each exchange registers the cancel scope it runs in. Shutdown `close()`s (exchanges that arrive
later, on connections already open, are answered 503), waits for `idle()`, and `cut()`s whatever
is left: each cut exchange sees its scope cancelled and, seeing `cutting`, answers with an error
in its family itself.
"""

from __future__ import annotations

import trio


class InFlight:
    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()
        self._idle: trio.Event | None = None
        self.closing = False
        self.cutting = False

    def __len__(self) -> int:
        return len(self._scopes)

    def enter(self, scope: trio.CancelScope) -> None:
        self._scopes.add(scope)

    def leave(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)
        if not self._scopes and self._idle is not None:
            self._idle.set()

    def close(self) -> None:
        self.closing = True

    async def idle(self) -> None:
        """Return once no exchange is in flight."""
        while self._scopes:
            self._idle = trio.Event()
            await self._idle.wait()

    def cut(self) -> None:
        self.cutting = True
        for scope in self._scopes:
            scope.cancel()
