"""Failed sign-ins, slowed per client: after a few failures an address must wait, longer
after each further one, before its next key is even checked (guessing keys costs time)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Failures an address may have within WINDOW before it waits; each further one doubles the
# wait, up to MAX_WAIT.
FREE_FAILURES = 5
WINDOW_SECONDS = 15 * 60
FIRST_WAIT_SECONDS = 2.0
MAX_WAIT_SECONDS = 60.0
# Addresses remembered at most (oldest forgotten first): a flood from many addresses costs
# bounded memory.
MAX_CLIENTS = 10_000


@dataclass
class _Failures:
    count: int
    last: float


@dataclass
class SignInThrottle:
    """Per process: each serve counts the failures it saw (a proxy in front can add more)."""

    clock: Callable[[], float] = time.monotonic
    _clients: dict[str, _Failures] = field(default_factory=dict)

    def wait(self, client: str) -> int:
        """Seconds ``client`` must wait before its next sign-in is checked (0: now)."""
        failures = self._current(client)
        if failures is None or failures.count < FREE_FAILURES:
            return 0
        doubled = 2.0 ** (failures.count - FREE_FAILURES)
        wait = min(FIRST_WAIT_SECONDS * doubled, MAX_WAIT_SECONDS)
        return max(0, math.ceil(failures.last + wait - self.clock()))

    def failed(self, client: str) -> None:
        failures = self._current(client)
        self._clients.pop(client, None)  # re-inserted last: the dict stays oldest first
        self._clients[client] = _Failures((failures.count if failures else 0) + 1, self.clock())
        while len(self._clients) > MAX_CLIENTS:
            del self._clients[next(iter(self._clients))]

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def _current(self, client: str) -> _Failures | None:
        failures = self._clients.get(client)
        if failures is not None and self.clock() - failures.last > WINDOW_SECONDS:
            del self._clients[client]
            return None
        return failures
