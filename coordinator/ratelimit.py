"""A per-client token bucket for the API's public routes.

Clients are told apart by the peer address of the TCP connection (``REMOTE_ADDR``), which
a client cannot choose; ``X-Forwarded-For`` and friends are never read, because anyone can
send them. Behind a reverse proxy, let the WSGI server rewrite the peer address from the
proxy's header (waitress: ``trusted_proxy``) so each real client still gets its own bucket.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """``rate`` requests per second per client, bursts up to ``burst``.

    At most ``max_clients`` buckets are kept (least recently seen dropped first), so a
    flood from many addresses costs bounded memory.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate limit needs rate > 0 and burst ≥ 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, client: str) -> float | None:
        """Count one request from ``client``: None if allowed, else seconds to wait."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate
