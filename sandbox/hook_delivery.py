"""Hook notifications: POST each matching order change to `hook.url`, retrying failed deliveries.

VTEX documents a 5000 ms limit ("must respond HTTP 200") and retries "recalculated based on an internal
geometric progression algorithm"; the schedule is unconfirmed (the spec hints at "more than 100 times, 4 days").
The sandbox doubles the wait from `retry_base_seconds` up to `retry_max_seconds`, for at most `max_attempts`
tries, so tests stay quick. Deliveries run on a few worker threads of their own: never under the sandbox
lock, never inside the request that changed the order. The notifier has its own lock, which is only ever
taken after the sandbox's, never the other way round.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

from sandbox.hook import HOOK_TIMEOUT_SECONDS
from sandbox.records import HookDelivery

WORKERS = 4  # one slow endpoint (up to 5 s a try) must not hold every other notification back


@dataclass(frozen=True)
class Notification:
    url: str
    headers: dict[str, str]
    payload: dict[str, Any]  # VTEX's PascalCase body
    duplicate: bool = False  # the extra copy sent by `hook_duplicate_rate`


@dataclass(frozen=True)
class _Pending:
    notification: Notification
    attempts: int  # tries made so far


class HookNotifier:
    def __init__(self, *, retry_base_seconds: float = 1.0, retry_max_seconds: float = 60.0,
                 max_attempts: int = 10) -> None:
        self.timeout_seconds = HOOK_TIMEOUT_SECONDS
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.max_attempts = max_attempts
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Pending]] = []  # (due, tie-breaker, item)
        self._seq = itertools.count()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._deliveries: list[HookDelivery] = []
        self._counts: Counter[str] = Counter()

    # ---- called by the sandbox (its lock may be held: all of these are quick) ------------------------

    def submit(self, notification: Notification, *, delay_seconds: float = 0.0) -> None:
        with self._cond:
            if self._closed:
                return
            self._counts["notifications"] += 1
            self._push(_Pending(notification, 0), time.monotonic() + max(0.0, delay_seconds))
            if not self._threads:
                self._start_workers()

    def record_drop(self, payload: dict[str, Any]) -> None:
        """`hook_drop_rate` at work: the notification is never sent, only remembered here."""
        with self._cond:
            self._counts["notifications"] += 1
            self._counts["dropped"] += 1
            self._deliveries.append(HookDelivery(order_id=payload["OrderId"], state=payload["State"], attempt=0,
                                                 status=None, outcome="dropped", at=time.time()))

    @property
    def deliveries(self) -> list[HookDelivery]:
        with self._cond:
            return list(self._deliveries)

    def counts(self) -> dict[str, int]:
        with self._cond:
            counts = {name: self._counts[name] for name in ("notifications", "attempts", "delivered", "dropped",
                                                            "gave_up")}
            counts["pending"] = len(self._heap) + self._in_flight
            return counts

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued, waiting for a retry or being sent; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # ---- lifecycle -----------------------------------------------------------------------------------

    def open(self) -> None:
        with self._cond:
            self._closed = False

    def close(self) -> None:
        """Stop the workers; notifications still waiting are abandoned, as a stopped VTEX would."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            threads, self._threads = self._threads, []
            self._cond.notify_all()
        for thread in threads:
            thread.join(timeout=self.timeout_seconds + 1)  # a try in flight ends within its timeout

    # ---- workers -------------------------------------------------------------------------------------

    def _push(self, item: _Pending, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))
        self._cond.notify()

    def _start_workers(self) -> None:
        for n in range(WORKERS):
            thread = threading.Thread(target=self._run, name=f"vtex-sandbox-hook-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next(self) -> _Pending | None:
        """The next due item (marked in flight), or None once closed."""
        with self._cond:
            while not self._closed:
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        self._in_flight += 1
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        with requests.Session() as session:  # keep-alive to the endpoint, one connection pool per worker
            while (item := self._next()) is not None:
                try:
                    self._attempt(session, item)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        self._cond.notify_all()

    def _attempt(self, session: requests.Session, item: _Pending) -> None:
        notification, attempt = item.notification, item.attempts + 1
        status: int | None = None
        error = ""
        try:
            response = session.post(notification.url, json=notification.payload, headers=notification.headers,
                                    timeout=self.timeout_seconds)
            status = response.status_code
            response.close()
        except (requests.RequestException, ValueError) as exc:  # ValueError: a header value requests refuses
            error = f"{type(exc).__name__}: {exc}"
        delivered = status == 200  # the guide asks for "HTTP 200", not any 2xx
        with self._cond:
            retry = not delivered and attempt < self.max_attempts and not self._closed
            outcome = "delivered" if delivered else "retrying" if retry else "gave_up"
            self._counts["attempts"] += 1
            self._counts[outcome] += 1
            self._deliveries.append(HookDelivery(
                order_id=notification.payload["OrderId"], state=notification.payload["State"], attempt=attempt,
                status=status, outcome=outcome, at=time.time(), duplicate=notification.duplicate, error=error,
            ))
            if retry:
                wait = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** (attempt - 1))
                self._push(_Pending(notification, attempt), time.monotonic() + wait)
