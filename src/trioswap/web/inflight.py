"""The inference exchanges in flight, so that shutdown can let them finish and then end the rest.

Each exchange runs inside a cancel scope it gets from `enter()`. Shutdown `close()`s (exchanges
that arrive later, on connections already open, are answered 503), waits for `idle()`, and
`cut()`s whatever is left: each cut exchange sees its scope cancelled and answers with an error
in its family itself.
"""

from __future__ import annotations

import trio


class InFlight:
    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()
        self._idle: trio.Event | None = None
        self.closing = False

    def __len__(self) -> int:
        return len(self._scopes)

    def enter(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        self._scopes.add(scope)
        return scope

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
        for scope in self._scopes:
            scope.cancel()
