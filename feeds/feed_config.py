"""Feed v3 configuration: what VTEX accepts, the exact request body, and pushing / loading it.

References: the Orders Feed v3 guide, https://developers.vtex.com/docs/guides/orders-feed (configuration,
JSONata filters), the Orders API reference, https://developers.vtex.com/docs/api-reference/orders-api, and the
OMS statuses, https://developers.vtex.com/docs/guides/orders-overview.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from core.models import Store
from core.vtex.client import VtexError, VtexUnavailable
from core.vtex_account import vtex_client
from feeds.expressions import ExpressionResult, expression_check, expression_evaluate
from feeds.models import FeedConfig

log = logging.getLogger("hub.feeds")

# The statuses VTEX's Orders API reference accepts in filter.status, with the Admin label (or a short meaning).
# VTEX does not validate them: a misspelling such as "cancelation-request" is saved and never fires.
OMS_STATUSES: list[tuple[str, str]] = [
    ("order-created", "Order created (data being processed)"),
    ("on-order-completed", "Checkout completed (marketplace)"),
    ("on-order-completed-ffm", "Checkout completed (seller)"),
    ("payment-pending", "Payment pending"),
    ("waiting-for-order-authorization", "Waiting for order authorization"),
    ("approve-payment", "Approving payment"),
    ("payment-approved", "Payment approved"),
    ("request-cancel", "Cancellation requested (marketplace)"),
    ("waiting-for-seller-decision", "Waiting for the seller's cancellation decision"),
    ("waiting-ffmt-authorization", "Seller waits for marketplace authorization"),
    ("waiting-for-authorization", "Waiting for seller confirmation"),
    ("waiting-for-manual-authorization", "Waiting for fulfillment authorization"),
    ("authorize-fulfillment", "Authorize fulfillment"),
    ("order-create-error", "Order create error"),
    ("order-creation-error", "Order creation error"),
    ("window-to-cancel", "Cancellation window"),
    ("window-to-change-seller", "Window to change seller"),
    ("waiting-for-mkt-authorization", "Waiting for marketplace authorization (chain)"),
    ("waiting-seller-handling", "Waiting for seller handling (chain)"),
    ("ready-for-handling", "Ready for handling"),
    ("start-handling", "Start handling"),
    ("handling", "Handling shipping"),
    ("invoice-after-cancellation-deny", "Invoice after cancellation denied"),
    ("order-accepted", "Order accepted (seller)"),
    ("invoice", "Verifying invoice"),
    ("invoiced", "Invoiced"),
    ("replaced", "Replaced"),
    ("cancellation-requested", "Cancellation requested (seller)"),
    ("cancel", "Canceling"),
    ("canceled", "Canceled"),
]
OMS_STATUS_NAMES = frozenset(name for name, _ in OMS_STATUSES)

# VTEX documents only the maximum (43200 s = 12 h, the SQS limit); its minimum is unconfirmed
# (SQS allows 0), so we choose 1: a zero timeout would hand every item to every reader at once.
VISIBILITY_MIN, VISIBILITY_MAX = 1, 43_200
RETENTION_MIN, RETENTION_MAX = 345_600, 1_209_600  # 4 and 14 days, per the current feed guide

ANSWER_CHARS = 300
# The filter a newly connected store starts with. invoiced: closes the return path.
DEFAULT_FEED_STATUSES = ["ready-for-handling", "handling", "invoiced", "cancel", "canceled"]


def feed_config_default(store: Store) -> FeedConfig:
    """The store's feed configuration, made with the default filter if it has none (not pushed to VTEX).

    Registered with core.stores.store_connect (FeedsConfig.ready()), so a store is connected with one.
    """
    config, _ = FeedConfig.objects.get_or_create(store=store, defaults={"statuses": DEFAULT_FEED_STATUSES})
    return config


def jsonata_check(expression: str) -> str | None:
    """Why a FromOrders expression cannot be saved (empty, too long, syntax, too slow), or None."""
    return expression_check(expression)


def jsonata_test(expression: str, document: dict) -> ExpressionResult:
    """Evaluate like VTEX's filter, under the limits of feeds.expressions (a child process)."""
    return expression_evaluate(expression, document)


def feed_config_body(config: FeedConfig) -> dict[str, Any]:
    """The exact POST /api/orders/feed/config body. Never mixes the two filter types: VTEX answers 409."""
    if config.filter_type == FeedConfig.FilterType.FROM_ORDERS:
        flt: dict[str, Any] = {"type": "FromOrders", "expression": config.expression,
                               "disableSingleFire": bool(config.disable_single_fire)}
    else:
        flt = {"type": "FromWorkflow", "status": list(config.statuses or [])}
    return {
        "filter": flt,
        "queue": {
            "visibilityTimeoutInSeconds": config.visibility_timeout_seconds,
            "MessageRetentionPeriodInSeconds": config.retention_seconds,  # capital M, as in the request schema
        },
    }


def _explain(exc: VtexError, *, loading: bool) -> str:
    """VTEX's error in words staff can act on."""
    status = exc.status
    if status is None:
        return f"VTEX did not answer: {exc}"
    if status == 404 and loading:
        return "The feed is not configured on VTEX for this appKey (HTTP 404). Save the configuration to create it."
    if status in (401, 403):
        return (f"VTEX refused the credentials (HTTP {status}): check the store's app key and token and that "
                f"its role can manage the Orders Feed. {exc}")
    if status == 409:
        return f"VTEX answered 409 Conflict: the filter mixes FromWorkflow and FromOrders fields. {exc}"
    if isinstance(exc, VtexUnavailable) and exc.rate_limited:
        wait = f" for {exc.retry_after:g} s" if exc.retry_after is not None else ""
        return f"VTEX is rate limiting this account (HTTP 429): try again{wait}."
    if isinstance(exc, VtexUnavailable):
        return f"VTEX is unavailable (HTTP {status}): try again later. {exc}"
    return f"VTEX refused it (HTTP {status}): {exc}"


@dataclass(frozen=True)
class PushResult:
    ok: bool
    status: int | None  # VTEX's HTTP status; None when it did not answer
    message: str


def feed_config_push(*, config: FeedConfig, by: str) -> PushResult:
    """Send the hub's configuration to VTEX and record the answer on it. VTEX errors are returned, not raised."""
    body = feed_config_body(config)
    client = vtex_client(config.store)
    try:
        call = client.feed_config_set(body)
        excerpt = call.excerpt.strip()[:ANSWER_CHARS]
        result = PushResult(ok=True, status=call.status,
                            message=f"VTEX accepted it: HTTP {call.status}" + (f" {excerpt}" if excerpt else ""))
    except VtexError as exc:
        result = PushResult(ok=False, status=exc.status, message=_explain(exc, loading=False))
    finally:
        client.close()
    log.info("feed config of %s pushed by %s: %s", config.store, by, result.message)
    # pushed_at is when VTEX last answered a push, whatever it said; push_accepted says which.
    config.pushed_at, config.push_accepted, config.vtex_answer = timezone.now(), result.ok, result.message[:1000]
    FeedConfig.objects.filter(pk=config.pk).update(pushed_at=config.pushed_at, push_accepted=config.push_accepted,
                                                   vtex_answer=config.vtex_answer)
    return result


# Fields compared with VTEX, in display order, and which filter type each belongs to (None: both).
COMPARED: list[tuple[str, str, str | None]] = [
    ("filter_type", "Filter type", None),
    ("statuses", "Statuses", FeedConfig.FilterType.FROM_WORKFLOW),
    ("expression", "Expression", FeedConfig.FilterType.FROM_ORDERS),
    ("disable_single_fire", "disableSingleFire", FeedConfig.FilterType.FROM_ORDERS),
    ("visibility_timeout_seconds", "Visibility timeout (s)", None),
    ("retention_seconds", "Retention (s)", None),
]


@dataclass(frozen=True)
class Comparison:
    """One field as the hub has it and as VTEX has it; None means "not part of that side's filter"."""

    field: str
    label: str
    hub: Any
    vtex: Any
    drifted: bool


@dataclass(frozen=True)
class LoadResult:
    ok: bool
    message: str
    vtex: dict[str, Any] | None = None  # VTEX's configuration in the hub's field names
    raw: dict[str, Any] | None = None  # VTEX's answer as received
    quantity: int | None = None
    oldest_age_seconds: float | None = None
    fields: list[Comparison] = field(default_factory=list)

    @property
    def drift(self) -> list[Comparison]:
        return [item for item in self.fields if item.drifted]


def _lower_keys(value: Any) -> dict[str, Any]:
    return {str(key).lower(): item for key, item in value.items()} if isinstance(value, dict) else {}


def feed_config_normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """VTEX's GET answer in the hub's field names; keys read case-insensitively (`messageRetention…`)."""
    top = _lower_keys(raw)
    flt, queue = _lower_keys(top.get("filter")), _lower_keys(top.get("queue"))
    statuses = flt.get("status")
    return {
        # With no filter VTEX behaves as FromWorkflow with every status (feed guide).
        "filter_type": flt.get("type") or FeedConfig.FilterType.FROM_WORKFLOW,
        "statuses": list(statuses) if isinstance(statuses, list) else None,
        "expression": flt.get("expression"),
        "disable_single_fire": bool(flt.get("disablesinglefire", False)),
        "visibility_timeout_seconds": queue.get("visibilitytimeoutinseconds"),
        "retention_seconds": queue.get("messageretentionperiodinseconds"),
    }


def _side(values: dict[str, Any], name: str, applies_to: str | None) -> Any:
    if applies_to is not None and values["filter_type"] != applies_to:
        return None
    return values[name]


def _same(name: str, hub: Any, vtex: Any) -> bool:
    if name == "statuses" and isinstance(hub, list) and isinstance(vtex, list):
        return set(hub) == set(vtex)  # order carries no meaning for VTEX
    if name == "expression" and isinstance(hub, str) and isinstance(vtex, str):
        return hub.strip() == vtex.strip()
    return hub == vtex


def feed_config_compare(config: FeedConfig, vtex: dict[str, Any]) -> list[Comparison]:
    hub = {name: getattr(config, name) for name, _, _ in COMPARED}
    rows = []
    for name, label, applies_to in COMPARED:
        hub_value, vtex_value = _side(hub, name, applies_to), _side(vtex, name, applies_to)
        rows.append(Comparison(field=name, label=label, hub=hub_value, vtex=vtex_value,
                               drifted=not _same(name, hub_value, vtex_value)))
    return rows


def feed_config_load(*, store: Store) -> LoadResult:
    """What VTEX has now, next to the hub's copy. Reads only: nothing is saved."""
    client = vtex_client(store)
    try:
        info = client.feed_config_get()
    except VtexError as exc:
        return LoadResult(ok=False, message=_explain(exc, loading=True))
    finally:
        client.close()
    vtex = feed_config_normalise(info.raw)
    config = FeedConfig.objects.filter(store=store).first()
    rows = feed_config_compare(config, vtex) if config else []
    drifted = [row.label for row in rows if row.drifted]
    message = (f"VTEX's configuration differs from the hub's in: {', '.join(drifted)}." if drifted
               else "VTEX's configuration matches the hub's.")
    return LoadResult(ok=True, message=message, vtex=vtex, raw=info.raw, quantity=info.quantity,
                      oldest_age_seconds=info.oldest_age_seconds, fields=rows)
