"""The order hook configuration the hub keeps on VTEX: its exact body, and pushing, loading and deleting it.

Reference: ../shared/vtex/ORDERS-API.md §2.1-2.3. The filter is the store's feed filter (FeedConfig, already
validated by its form), so hook and feed report the same changes and the inbox can pair them. The URL is
HUB_PUBLIC_URL + /hooks/vtex/<store>/, and the hub's own X-Hub-Hook-Token header carries the store's hook
secret: VTEX sends the configured headers with the ping and every notification. The secret is never logged
nor returned in a message.

Whether VTEX still has the hook is kept on the FeedConfig (hook_pushed_at, hook_present): VTEX deletes a hook
after 3 days without notifications, and the refresh_queue_status job looks for it (hook_presence_check).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from core.models import Store
from core.vtex.client import VtexClient, VtexError, VtexUnavailable
from core.vtex_account import store_pause, vtex_client
from feeds.feed_config import PushResult, feed_config_body, feed_config_normalise
from feeds.hook_inbox import HOOK_TOKEN_HEADER
from feeds.models import FeedConfig
from feeds.services import vtex_log_add

log = logging.getLogger("hub.feeds")

# VTEX pings the URL (up to 5 s, unconfirmed) before it answers the POST: give the call room for both.
PUSH_TIMEOUT_SECONDS = 15.0
HIDDEN = "(hidden)"


class HookConfigRefused(Exception):
    """The hub cannot build the hook configuration yet (no public URL, no secret, no filter): nothing was sent."""


def hook_url(store: Store) -> str:
    """Where VTEX must POST: HUB_PUBLIC_URL (https; http only on loopback) + /hooks/vtex/<name>/."""
    public = str(getattr(settings, "HUB_PUBLIC_URL", "") or "").strip().rstrip("/")
    if not public:
        raise HookConfigRefused("HUB_PUBLIC_URL is not set: VTEX needs the hub's public https address "
                                "(e.g. HUB_PUBLIC_URL=https://hub.example.com) to call the hook")
    parts = urlsplit(public)
    try:
        URLValidator(schemes=["http", "https"])(public)
    except ValidationError:
        raise HookConfigRefused(f"HUB_PUBLIC_URL {public!r} is not an http(s) URL") from None
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise HookConfigRefused("HUB_PUBLIC_URL must be scheme://host[:port][/path], without query or credentials")
    if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise HookConfigRefused("HUB_PUBLIC_URL must be https (VTEX accepts only https hook URLs)")
    return public + reverse("hook_receive", args=[store.name])


def hook_config_body(store: Store) -> dict[str, Any]:
    """The exact POST /api/orders/hook/config body; raises HookConfigRefused when it cannot be built."""
    if not store.hook_secret:
        raise HookConfigRefused(f"store {store.name} has no hook secret: set one first "
                                f"(manage.py connect_store {store.name} --generate-hook-secret)")
    config = FeedConfig.objects.filter(store=store).first()
    if config is None:
        raise HookConfigRefused(f"store {store.name} has no feed filter: save one under Feed configs in the admin")
    return {"filter": feed_config_body(config)["filter"],
            "hook": {"url": hook_url(store), "headers": {HOOK_TOKEN_HEADER: store.hook_secret}}}


def _client(store: Store) -> VtexClient:
    return vtex_client(store, timeout=max(float(settings.HUB_HTTP_TIMEOUT_SECONDS), PUSH_TIMEOUT_SECONDS))


def _hidden(store: Store, text: str) -> str:
    """Belt and braces: whatever VTEX says back, the secret is not repeated to staff or to the log."""
    return text.replace(store.hook_secret, HIDDEN) if store.hook_secret else text


def _explain(exc: VtexError) -> str:
    status = exc.status
    if status is None:
        return f"VTEX did not answer: {exc}"
    if status == 400:
        return (f"VTEX refused it (HTTP 400). When the ping failed, VTEX could not reach the hub's hook URL with "
                f"the secret, or did not get 200: check HUB_PUBLIC_URL and that the hub is reachable. {exc}")
    if status in (401, 403):
        return (f"VTEX refused the credentials (HTTP {status}): check the store's app key and token and that "
                f"its role can manage the order hook. {exc}")
    if isinstance(exc, VtexUnavailable):
        return f"VTEX is unavailable or rate limiting (HTTP {status}): try again later. {exc}"
    return f"VTEX refused it (HTTP {status}): {exc}"


def hook_config_push(*, store: Store, by: str) -> PushResult:
    """Create or replace the store's hook on VTEX. Refusals and VTEX errors are returned, not raised."""
    try:
        body = hook_config_body(store)
    except HookConfigRefused as refused:
        return PushResult(ok=False, status=None, message=f"not sent: {refused}")
    client = _client(store)
    try:
        call = client.hook_config_set(body)
        result = PushResult(ok=True, status=call.status,
                            message=f"VTEX accepted the hook (HTTP {call.status}): it calls {body['hook']['url']}")
    except VtexError as exc:
        result = PushResult(ok=False, status=exc.status, message=_hidden(store, _explain(exc)))
    finally:
        client.close()
    log.info("hook config of %s pushed by %s: %s", store.name, by, result.message)
    if result.ok:  # from now on the job watches that VTEX keeps it
        now = timezone.now()
        FeedConfig.objects.filter(store=store).update(hook_pushed_at=now, hook_present=True, hook_checked_at=now)
    return result


def hook_config_delete(*, store: Store, by: str) -> PushResult:
    """Delete the store's hook on VTEX; a hook VTEX does not have (404) counts as deleted."""
    client = _client(store)
    try:
        call = client.hook_config_delete()
        result = PushResult(ok=True, status=call.status, message=f"VTEX deleted the hook (HTTP {call.status})")
    except VtexError as exc:
        if exc.status == 404:
            result = PushResult(ok=True, status=404, message="VTEX has no hook for this appKey (HTTP 404)")
        else:
            result = PushResult(ok=False, status=exc.status, message=_hidden(store, _explain(exc)))
    finally:
        client.close()
    log.info("hook config of %s deleted by %s: %s", store.name, by, result.message)
    if result.ok:  # deleted on purpose: no longer watched, nor re-applied
        FeedConfig.objects.filter(store=store).update(hook_pushed_at=None, hook_present=None,
                                                      hook_checked_at=timezone.now())
        vtex_log_add(store_id=store.pk, text=f"hook deleted on VTEX by {by}")
    return result


@dataclass(frozen=True)
class HookDrift:
    label: str
    hub: Any
    vtex: Any


@dataclass(frozen=True)
class HookLoadResult:
    ok: bool
    message: str
    vtex: dict[str, Any] | None = None  # VTEX's configuration with every header value hidden
    drift: list[HookDrift] = field(default_factory=list)
    hub: dict[str, Any] | None = None  # what the hub would push, the token hidden
    found: bool = False  # VTEX has a hook for this appKey


def _lower(value: Any) -> dict[str, Any]:
    return {str(key).lower(): item for key, item in value.items()} if isinstance(value, dict) else {}


def hook_config_load(*, store: Store) -> HookLoadResult:
    """VTEX's hook next to what the hub would push (filter, URL, token); header values never shown.

    Changes nothing on VTEX; whether VTEX has the hook is kept as the latest check (hook_presence_record).
    """
    client = _client(store)
    try:
        raw = client.hook_config_get()
    except VtexError as exc:
        if exc.status == 404:
            hook_presence_record(store=store, present=False, via="Load hook from VTEX")
            return HookLoadResult(ok=True, message="VTEX has no hook for this appKey (HTTP 404)", hub=_ours(store))
        return HookLoadResult(ok=False, message=_hidden(store, _explain(exc)))
    finally:
        client.close()
    hook_presence_record(store=store, present=True, via="Load hook from VTEX")
    hook = _lower(_lower(raw).get("hook"))
    given = hook.get("headers")
    headers = {str(name): str(value) for name, value in given.items()} if isinstance(given, dict) else {}
    shown = {"filter": _lower(raw).get("filter"), "hook": {"url": hook.get("url"),
                                                          "headers": {name: HIDDEN for name in headers}}}
    try:
        ours = hook_config_body(store)
    except HookConfigRefused as refused:
        return HookLoadResult(ok=True, message=f"VTEX's hook loaded; the hub's cannot be compared: {refused}",
                              vtex=shown, found=True)
    drift = _drift(store, ours, raw, hook, headers)
    message = (f"VTEX's hook differs from the hub's in: {', '.join(item.label for item in drift)}." if drift
               else "VTEX's hook matches the hub's.")
    return HookLoadResult(ok=True, message=message, vtex=shown, drift=drift, hub=_ours(store), found=True)


def _ours(store: Store) -> dict[str, Any] | None:
    """The body the hub would push, with the token hidden; None when it cannot be built."""
    try:
        body = hook_config_body(store)
    except HookConfigRefused:
        return None
    body["hook"]["headers"] = {name: HIDDEN for name in body["hook"]["headers"]}
    return body


def hook_presence_record(*, store: Store, present: bool, via: str) -> bool:
    """Keep whether VTEX still has the hub's hook. True when it has just gone missing (logged and noted).

    Only a hook the hub keeps (pushed, or found by a load) is watched: a store without one changes nothing.
    """
    now = timezone.now()
    kept = FeedConfig.objects.filter(store=store).filter(models.Q(hook_pushed_at__isnull=False) |
                                                        models.Q(hook_present=True))
    if present:
        FeedConfig.objects.filter(store=store).update(hook_present=True, hook_checked_at=now)
        return False
    gone = kept.exclude(hook_present=False).update(hook_present=False, hook_checked_at=now) == 1
    kept.update(hook_checked_at=now)
    if gone:
        text = (f"hook missing on VTEX ({via} answered 404): VTEX removes a hook after 3 days without "
                f"notifications")
        log.warning("store %s: %s", store.name, text)
        vtex_log_add(store_id=store.pk, text=text)
    return gone


def hook_presence_check(*, store: Store) -> bool | None:
    """For the 5-minute job: whether VTEX still has the store's hook (GET hook/config); None when unknown."""
    client = _client(store)
    try:
        client.hook_config_get()
        present = True
    except VtexError as exc:
        if exc.status != 404:
            if isinstance(exc, VtexUnavailable) and exc.rate_limited:
                store_pause(store_id=store.pk, retry_after=exc.retry_after)
            log.warning("store %s: hook check failed: %s", store.name, _hidden(store, str(exc)))
            return None
        present = False
    finally:
        client.close()
    hook_presence_record(store=store, present=present, via="the hook check")
    return present


def _drift(store: Store, ours: dict[str, Any], raw: dict[str, Any], hook: dict[str, Any],
           headers: dict[str, str]) -> list[HookDrift]:
    mine, theirs = feed_config_normalise(ours), feed_config_normalise(raw)
    drift = [HookDrift("Filter type", mine["filter_type"], theirs["filter_type"])]
    if mine["filter_type"] == FeedConfig.FilterType.FROM_WORKFLOW:
        drift.append(HookDrift("Statuses", sorted(mine["statuses"] or []), sorted(theirs["statuses"] or [])))
    else:
        drift += [HookDrift("Expression", (mine["expression"] or "").strip(), (theirs["expression"] or "").strip()),
                  HookDrift("disableSingleFire", mine["disable_single_fire"], theirs["disable_single_fire"])]
    drift.append(HookDrift("URL", ours["hook"]["url"], hook.get("url")))
    token = next((value for name, value in headers.items() if name.lower() == HOOK_TOKEN_HEADER.lower()), "")
    same = bool(token) and hmac.compare_digest(token.encode(), store.hook_secret.encode())
    drift.append(HookDrift(HOOK_TOKEN_HEADER, "the store's hook secret",
                           "the store's hook secret" if same else ("another value" if token else "missing")))
    return [item for item in drift if item.hub != item.vtex]


@dataclass(frozen=True)
class HookStatus:
    """What the hook page shows before any call to VTEX: what the hub would push and what it last saw."""

    has_secret: bool
    public_url: str  # HUB_PUBLIC_URL as set ("" when unset)
    url: str  # where VTEX would call; "" when it cannot be built
    problem: str  # why the hub cannot push (no secret, no usable URL, no filter); "" when it can
    pushed_at: datetime | None  # the last push VTEX accepted
    present: bool | None  # VTEX still had it at checked_at; None: not watched / never checked
    checked_at: datetime | None

    @property
    def kept(self) -> bool:
        """The hub keeps a hook on VTEX (pushed, or found by a load): the job watches it."""
        return self.pushed_at is not None or self.present is True


def hook_status(*, config: FeedConfig) -> HookStatus:
    """The hook page's facts, from the hub's side only (no call to VTEX)."""
    store = config.store
    url, problem = "", ""
    try:
        url = hook_url(store)
    except HookConfigRefused as refused:
        problem = str(refused)
    if not problem:
        try:
            hook_config_body(store)
        except HookConfigRefused as refused:
            problem = str(refused)
    public_url = str(getattr(settings, "HUB_PUBLIC_URL", "") or "")
    return HookStatus(has_secret=bool(store.hook_secret), public_url=public_url, url=url, problem=problem, pushed_at=config.hook_pushed_at, present=config.hook_present,
                      checked_at=config.hook_checked_at)
