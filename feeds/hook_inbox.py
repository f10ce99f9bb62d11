"""The order hook's inbox: a VTEX notification, authenticated, becomes one stored event like a feed item.

Reference: ../shared/vtex/ORDERS-API.md §2.4. VTEX signs nothing, so a call is authenticated by the header
the hub itself put in the hook configuration (X-Hub-Hook-Token = the store's hook secret, see hook_config.py);
then the notification must name the store's appKey (and account) as its Origin. It is stored through the
feed's own batch service (events_store_batch), so both sources share the duplicate rules and queue order work
the same way; the request only stores, the jobs do the ERP work. A refused call stores nothing and is counted
per store and reason (HookRejection) for the dashboard.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.models import Store
from core.vtex.client import FeedItem, parse_vtex_time
from feeds.models import FeedEvent, HookRejection
from feeds.services import events_store_batch
from integrationhub.json_body import BodyNotJson, BodyTooLarge, json_body_read

log = logging.getLogger("hub.feeds")

HOOK_TOKEN_HEADER = "X-Hub-Hook-Token"
MAX_BODY_BYTES = 64 * 1024  # a notification is ~300 bytes; anything near this is not VTEX
# Documented fields: the required ones, then the ones VTEX's own guide example leaves out.
REQUIRED_TEXT = ("Domain", "OrderId", "State", "LastChange")
OPTIONAL_TEXT = ("LastState", "CurrentChange")
# FeedEvent's column sizes: a longer value is refused rather than cut, since the dedupe compares it exactly.
MAX_CHARS = {"Domain": 50, "OrderId": 100, "State": 60, "LastState": 60}
Reason = HookRejection.Reason


@dataclass(frozen=True)
class HookAnswer:
    """What the endpoint answers; `reason` is set when the call was refused, `event` when one was stored."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    event: FeedEvent | None = None


class _Refused(Exception):
    def __init__(self, reason: str, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason, self.status, self.message, self.headers = reason, status, message, headers or {}


def hook_call_receive(*, store_name: str, method: str, token: str | None, content_length: int | None,
                      read: Callable[[int], bytes]) -> HookAnswer:
    """Authenticate, parse and store one hook call; `read(n)` reads at most n bytes of the body.

    Checks run cheapest first, and the body is read only once the caller has shown the store's secret.
    """
    store = Store.objects.filter(name=store_name).only(
        "pk", "name", "enabled", "account", "app_key", "hook_secret").first()
    try:
        if method != "POST":
            raise _Refused(Reason.METHOD, 405, "only POST", {"Allow": "POST"})
        if store is None or not store.enabled:
            raise _Refused(Reason.UNKNOWN_STORE if store is None else Reason.DISABLED_STORE, 404, "no such store")
        _authenticate(store, token)
        payload = _json_body(content_length, read)
        if isinstance(payload, dict) and payload.get("hookConfig") == "ping":
            return HookAnswer(200, {"ok": True})  # VTEX's check while it saves the configuration
        item = hook_notification_parse(payload)
        _check_origin(store, payload["Origin"])
    except _Refused as refused:
        hook_rejection_count(store_id=store.pk if store is not None else None, reason=refused.reason)
        # The caller's store name is their text: repr() keeps a line break out of the log.
        log.warning("hook call to %s refused (%s): %s", store.name if store else repr(store_name[:64]),
                    refused.status, refused.reason)
        return HookAnswer(refused.status, {"error": refused.message}, refused.headers, reason=refused.reason)
    [event] = events_store_batch(store=store, items=[item], source=FeedEvent.Source.HOOK)
    log.info("hook: %s %s %s stored as %s", store.name, item.order_id, item.state, event.outcome)
    return HookAnswer(200, {"ok": True, "outcome": event.outcome}, event=event)


def _authenticate(store: Store, token: str | None) -> None:
    # One message for all three: a caller without the secret learns nothing about the store's setup.
    unauthorized = "missing or wrong " + HOOK_TOKEN_HEADER
    challenge = {"WWW-Authenticate": HOOK_TOKEN_HEADER}
    if not store.hook_secret:
        raise _Refused(Reason.NO_SECRET, 401, unauthorized, challenge)
    if not token:
        raise _Refused(Reason.NO_TOKEN, 401, unauthorized, challenge)
    if not hmac.compare_digest(token.encode(), store.hook_secret.encode()):
        raise _Refused(Reason.WRONG_TOKEN, 401, unauthorized, challenge)


def _json_body(content_length: int | None, read: Callable[[int], bytes]) -> Any:
    try:
        return json_body_read(content_length=content_length, read=read, max_bytes=MAX_BODY_BYTES)
    except BodyTooLarge:
        raise _Refused(Reason.TOO_LARGE, 413, f"body over {MAX_BODY_BYTES} bytes") from None
    except BodyNotJson:
        raise _Refused(Reason.BAD_JSON, 400, "body is not valid JSON") from None


def hook_notification_parse(payload: Any) -> FeedItem:
    """VTEX's notification (PascalCase) as the inbox's FeedItem; raises _Refused (400) for anything else.

    No handle (nothing to commit) and no eventId: the change time is the dedupe key, CurrentChange or, when
    VTEX leaves it out, LastChange; the feed's item for the same change has the same currentChange.
    """
    if not isinstance(payload, dict):
        raise _Refused(Reason.BAD_SHAPE, 400, "body must be a JSON object")
    for name in (*REQUIRED_TEXT, *OPTIONAL_TEXT):
        value = payload.get(name)
        if value is None and name in OPTIONAL_TEXT:
            continue
        if not isinstance(value, str) or not value.strip():
            raise _Refused(Reason.BAD_SHAPE, 400, f"{name} must be a non-empty string")
        if len(value.strip()) > MAX_CHARS.get(name, 100):
            raise _Refused(Reason.BAD_SHAPE, 400, f"{name} is too long")
    origin = payload.get("Origin")
    if not isinstance(origin, dict) or not all(isinstance(origin.get(key), str) for key in ("Account", "Key")):
        raise _Refused(Reason.BAD_SHAPE, 400, "Origin must be an object with Account and Key")
    last_change = parse_vtex_time(payload["LastChange"])
    current = payload.get("CurrentChange")
    current_change = last_change if current is None else parse_vtex_time(current)
    if last_change is None or current_change is None:
        raise _Refused(Reason.BAD_SHAPE, 400, "LastChange and CurrentChange must be ISO 8601 times")
    return FeedItem(raw=payload, order_id=payload["OrderId"].strip(), state=payload["State"].strip(),
                    last_state=(payload.get("LastState") or "").strip(), domain=payload["Domain"].strip(),
                    last_change=last_change, current_change=current_change)


def _check_origin(store: Store, origin: dict[str, Any]) -> None:
    """The secret proved who calls; Origin says whose hook fired. Another appKey's hook here is misconfigured."""
    # Account names are case-insensitive for VTEX (they are host names); appKeys are compared exactly.
    if origin["Key"].strip() != store.app_key or origin["Account"].strip().casefold() != store.account.casefold():
        raise _Refused(Reason.WRONG_ORIGIN, 403, "Origin is not this store's account and appKey")


def hook_rejection_count(*, store_id: int | None, reason: str) -> None:
    """Add one to the (store, reason) counter, creating it on first use."""
    now = timezone.now()
    rows = HookRejection.objects.filter(store_id=store_id, reason=reason)
    if rows.update(count=F("count") + 1, last_at=now):
        return
    try:
        with transaction.atomic():
            HookRejection.objects.create(store_id=store_id, reason=reason, count=1, last_at=now)
    except IntegrityError:
        rows.update(count=F("count") + 1, last_at=now)  # another request created it in between
