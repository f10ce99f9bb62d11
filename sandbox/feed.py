"""Feed v3 configuration, filtering and the SQS-like queue behind `GET/POST /api/orders/feed`."""

from __future__ import annotations

import base64
import heapq
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jsonata

DEFAULT_STATUSES = ["payment-approved", "window-to-cancel", "ready-for-handling", "handling", "invoiced", "cancel",
                    "canceled"]
RETENTION_MIN, RETENTION_MAX = 345_600, 1_209_600  # 4 and 14 days, per the current feed guide
VISIBILITY_MAX = 43_200  # 12 h, the SQS limit; the minimum is undocumented, SQS allows 0


class ConfigError(Exception):
    """A rejected feed/hook configuration; `status` is the HTTP status VTEX answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class FeedFilter:
    """Decides whether an order change enters the feed (or would be sent to the hook)."""

    type: str
    statuses: frozenset[str] | None = None  # FromWorkflow; None = every status change
    expression: str | None = None
    disable_single_fire: bool = False
    _compiled: Any = field(default=None, repr=False)
    _fired: set[str] = field(default_factory=set, repr=False)

    def matches(self, *, order_id: str, state: str, doc: dict[str, Any]) -> bool:
        if self.type == "FromWorkflow":
            return self.statuses is None or state in self.statuses
        try:
            result = self._compiled.evaluate(doc)
        except Exception:  # noqa: BLE001 - jsonata raises plain exceptions; a runtime error is "no match"
            return False
        if not result:
            return False
        if self.disable_single_fire:
            return True
        # disableSingleFire=false: an order enters the feed only the first time it matches.
        if order_id in self._fired:
            return False
        self._fired.add(order_id)
        return True


def _present(raw: dict[str, Any], key: str) -> bool:
    return raw.get(key) is not None


def parse_filter(raw: Any, *, status_required: bool = False) -> tuple[dict[str, Any], FeedFilter]:
    """Validate a `filter` object (shared by feed and hook); returns the stored shape and the matcher.

    A feed's FromWorkflow filter may leave `status` out: every status change then enters the feed (spec and
    feed guide). The hook's spec says "you must send at least one value for the status field": `status_required`.
    """
    if not isinstance(raw, dict):
        raise ConfigError(400, "filter is required")
    kind = raw.get("type")
    if kind is None:
        raise ConfigError(400, "filter.type is required")
    if kind == "FromWorkflow":
        if _present(raw, "expression") or _present(raw, "disableSingleFire"):
            raise ConfigError(409, "FromWorkflow filter cannot have expression or disableSingleFire")
        statuses = raw.get("status")
        if statuses is None and not status_required:
            return {"type": kind}, FeedFilter(type=kind)
        # Status strings are deliberately not checked: VTEX accepts misspellings, which then never match.
        # An empty list is refused: it could never match, and VTEX's answer to it is undocumented.
        if not isinstance(statuses, list) or not statuses or not all(isinstance(s, str) for s in statuses):
            raise ConfigError(400, "filter.status must be a non-empty list of strings")
        return {"type": kind, "status": list(statuses)}, FeedFilter(type=kind, statuses=frozenset(statuses))
    if kind == "FromOrders":
        if _present(raw, "status"):
            raise ConfigError(409, "FromOrders filter cannot have status")
        expression = raw.get("expression")
        single = raw.get("disableSingleFire", False)
        if not isinstance(expression, str) or not expression.strip():
            raise ConfigError(400, "filter.expression is required")
        if not isinstance(single, bool):
            raise ConfigError(400, "filter.disableSingleFire must be a boolean")
        try:
            compiled = jsonata.Jsonata(expression)
        except Exception as exc:  # noqa: BLE001 - VTEX's answer to a bad expression is undocumented; 400 is our choice
            raise ConfigError(400, f"Invalid JSONata expression: {exc}") from exc
        stored = {"type": kind, "expression": expression, "disableSingleFire": single}
        return stored, FeedFilter(type=kind, expression=expression, disable_single_fire=single, _compiled=compiled)
    raise ConfigError(400, f"filter.type must be FromWorkflow or FromOrders, not {kind!r}")


def _int_field(queue: dict[str, Any], name: str) -> int:
    # VTEX's .NET binder is case-insensitive: accept `messageRetention...` as well as `MessageRetention...`.
    for key, value in queue.items():
        if key.lower() == name.lower():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(400, f"queue.{name} must be an integer")
            return value
    raise ConfigError(400, f"queue.{name} is required")


@dataclass
class FeedConfig:
    stored: dict[str, Any]  # request shape, as the client sent it (normalized)
    filter: FeedFilter
    visibility: int
    retention: int


def parse_feed_config(body: Any) -> FeedConfig:
    if not isinstance(body, dict):
        raise ConfigError(400, "body must be a JSON object")
    stored_filter, matcher = parse_filter(body.get("filter"))
    queue = body.get("queue")
    if not isinstance(queue, dict):
        raise ConfigError(400, "queue is required")
    visibility = _int_field(queue, "visibilityTimeoutInSeconds")
    retention = _int_field(queue, "MessageRetentionPeriodInSeconds")
    if not 0 <= visibility <= VISIBILITY_MAX:
        raise ConfigError(400, f"queue.visibilityTimeoutInSeconds must be between 0 and {VISIBILITY_MAX}")
    if not RETENTION_MIN <= retention <= RETENTION_MAX:
        raise ConfigError(400, f"queue.MessageRetentionPeriodInSeconds must be between {RETENTION_MIN} and "
                               f"{RETENTION_MAX}")
    stored = {"filter": stored_filter,
              "queue": {"visibilityTimeoutInSeconds": visibility, "MessageRetentionPeriodInSeconds": retention}}
    return FeedConfig(stored=stored, filter=matcher, visibility=visibility, retention=retention)


def default_feed_config(visibility: int) -> FeedConfig:
    return parse_feed_config({
        "filter": {"type": "FromWorkflow", "status": DEFAULT_STATUSES},
        "queue": {"visibilityTimeoutInSeconds": visibility, "MessageRetentionPeriodInSeconds": RETENTION_MIN},
    })


@dataclass
class Message:
    seq: int
    item: dict[str, Any]  # the feed item without its handle
    enqueued_at: float
    handle: str | None = None  # the latest handle issued; only this one commits the message
    visible_at: float = 0.0


def with_handle(item: dict[str, Any], handle: str) -> dict[str, Any]:
    """The item as delivered: `handle` right after `eventId`, as in VTEX's example."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key == "handle":
            continue
        out[key] = value
        if key == "eventId":
            out["handle"] = handle
    out.setdefault("handle", handle)
    return out


class FeedQueue:
    """SQS standard queue semantics: visibility timeout, retention, fresh receipt handle per delivery.

    Visible messages sit in an ordered dict and hidden ones in a heap keyed by when they reappear, so a read
    costs O(maxlot log n) instead of a scan of the whole queue. Stale heap entries are skipped lazily.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seq = 0
        self._messages: OrderedDict[int, Message] = OrderedDict()  # every uncommitted message, enqueue order
        self._visible: OrderedDict[int, None] = OrderedDict()
        self._hidden: list[tuple[float, int, str]] = []  # (visible_at, seq, handle)
        self._by_handle: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, item: dict[str, Any], now: float) -> None:
        self._seq += 1
        self._messages[self._seq] = Message(seq=self._seq, item=item, enqueued_at=now)
        self._visible[self._seq] = None

    def new_handle(self) -> str:
        # Shaped like an SQS receipt handle; VTEX wraps one in a JWT, but clients must treat it as opaque.
        return "AQEB" + base64.urlsafe_b64encode(self._rng.randbytes(30)).decode()

    def _remove(self, seq: int) -> None:
        message = self._messages.pop(seq)
        self._visible.pop(seq, None)
        if message.handle is not None:
            self._by_handle.pop(message.handle, None)

    def expire(self, now: float, retention: int) -> None:
        """Drop messages older than the retention period, delivered or not."""
        while self._messages:
            seq, message = next(iter(self._messages.items()))
            if message.enqueued_at > now - retention:
                break
            self._remove(seq)

    def _unhide(self, now: float) -> None:
        back: list[int] = []
        while self._hidden and self._hidden[0][0] <= now:
            visible_at, seq, handle = heapq.heappop(self._hidden)
            message = self._messages.get(seq)
            if message is not None and message.handle == handle and message.visible_at == visible_at:
                back.append(seq)
        for seq in sorted(back):  # re-delivered messages go to the back, oldest first
            self._visible[seq] = None

    def _pick(self, maxlot: int, shuffle: bool) -> list[int]:
        if not shuffle:
            return [seq for seq, _ in zip(self._visible, range(maxlot))]
        # No ordering guarantee: sample from a window at the head, like SQS sampling a subset of its servers.
        window = [seq for seq, _ in zip(self._visible, range(max(50, maxlot * 5)))]
        return self._rng.sample(window, min(maxlot, len(window)))

    def read(self, maxlot: int, now: float, *, visibility: int, shuffle: bool) -> list[dict[str, Any]]:
        self._unhide(now)
        items = []
        for seq in self._pick(maxlot, shuffle):
            message = self._messages[seq]
            if message.handle is not None:
                self._by_handle.pop(message.handle, None)
            message.handle = self.new_handle()
            message.visible_at = now + visibility
            self._by_handle[message.handle] = seq
            del self._visible[seq]
            heapq.heappush(self._hidden, (message.visible_at, seq, message.handle))
            items.append(with_handle(message.item, message.handle))
        return items

    def peek(self, maxlot: int, now: float) -> list[dict[str, Any]]:
        """What a read would return, without hiding anything or issuing real handles."""
        self._unhide(now)
        return [with_handle(self._messages[seq].item, self.new_handle()) for seq, _ in zip(self._visible, range(maxlot))]

    def commit(self, handles: list[Any]) -> int:
        """Delete messages whose current handle is listed; unknown or stale handles are ignored."""
        removed = 0
        for handle in handles:
            seq = self._by_handle.get(handle) if isinstance(handle, str) else None
            if seq is not None:
                self._remove(seq)
                removed += 1
        return removed

    def hidden(self, now: float) -> int:
        """Messages a read hid and whose visibility timeout has not ended: read, not committed, not visible."""
        self._unhide(now)
        return len(self._messages) - len(self._visible)

    def oldest_age(self, now: float) -> float:
        if not self._messages:
            return 0.0
        return max(0.0, now - next(iter(self._messages.values())).enqueued_at)

    def make_all_visible(self) -> None:
        for message in self._messages.values():
            message.visible_at = 0.0
        self._hidden.clear()
        self._visible = OrderedDict.fromkeys(self._messages)
