"""What the sandbox remembers about the traffic it received, for test assertions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the sandbox answered (scripted and random faults included)
    at: float  # time.time() when the request arrived


@dataclass(frozen=True)
class ErpDelivery:
    idempotency_key: str
    event: str
    order_id: str
    body: dict[str, Any]
    headers: dict[str, str]  # lower-case names
    at: float
    status: int  # 201 first time, 200 for a replay of a known key
    erp_id: str
    replay: bool

    def summary(self) -> dict[str, Any]:
        """The delivery without the order document, to keep listings small."""
        return {
            "idempotency_key": self.idempotency_key,
            "event": self.event,
            "order_id": self.order_id,
            "at": self.at,
            "status": self.status,
            "erp_id": self.erp_id,
            "replay": self.replay,
        }


@dataclass
class Response:
    """One HTTP answer, built under the lock and written by the handler outside it."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HookDelivery:
    """One try to deliver a hook notification (or a notification `hook_drop_rate` dropped)."""

    order_id: str
    state: str
    attempt: int  # 1 for the first try; 0 for a dropped notification
    status: int | None  # what the endpoint answered; None when dropped, timed out or unreachable
    outcome: str  # "delivered", "retrying" (another try is scheduled), "gave_up" or "dropped"
    at: float  # time.time() when the try ended
    duplicate: bool = False  # the extra copy `hook_duplicate_rate` sent
    error: str = ""

    def summary(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "state": self.state, "attempt": self.attempt, "status": self.status,
                "outcome": self.outcome, "at": self.at, "duplicate": self.duplicate, "error": self.error}
