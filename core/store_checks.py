"""Checks `connect_store` runs before it saves: do the VTEX credentials work, does the ERP URL answer?

Both are harmless: a GET of the feed configuration (reads, never dequeues) and a HEAD to the ERP URL
(never an order). Bad input changes nothing: the checks run on the values the store *would* have, and
only then is anything written. A failed check (401/403, a host that cannot be reached) refuses the save;
an answer that proves nothing either way (429, 5xx) is reported and does not block it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import requests
from django.conf import settings
from django.db import transaction

from core.stores import ConnectResult, redact_url, store_connect
from core.vtex.client import VtexClient, VtexError, VtexUnavailable, classify_failure
from integrationhub.http import new_session

MAX_CHECK_SECONDS = 10.0  # a person is waiting at the prompt: fail fast rather than wait the full timeout
Verdict = Literal["ok", "warning", "failed"]
VTEX_HINT = "check --account, --environment and --base-url"
ERP_HINT = "check --erp-url"


@dataclass(frozen=True)
class StoreCheck:
    subject: str  # "VTEX credentials", "VTEX", "ERP"
    verdict: Verdict
    text: str

    @property
    def failed(self) -> bool:
        return self.verdict == "failed"

    @property
    def line(self) -> str:
        return f"{self.subject}: {self.text}"


class StoreCheckFailed(Exception):
    """At least one check failed; nothing was written."""

    def __init__(self, checks: list[StoreCheck]) -> None:
        self.checks = checks
        super().__init__("; ".join(check.line for check in checks if check.failed))


@dataclass(frozen=True)
class ConnectionTarget:
    """What a store's connections would be after a store_connect call: given values over stored ones."""

    vtex_base_url: str
    app_key: str
    app_token: str = field(repr=False)
    erp_url: str
    erp_headers: dict[str, str] = field(repr=False)
    erp_timeout: float


@dataclass(frozen=True)
class CheckedConnect:
    result: ConnectResult
    checks: list[StoreCheck]  # empty when the checks were skipped


def _vtex_cause(exc: VtexUnavailable, timeout: float) -> str:
    """The client's own words for a failure without an HTTP answer (connection refused, DNS, TLS, timeout)."""
    return getattr(exc, "cause", "") or classify_failure(exc.__cause__ or exc, timeout=timeout)[1]


# --- the checks ------------------------------------------------------------------------------------

def vtex_credentials_check(*, base_url: str, app_key: str, app_token: str, timeout: float) -> StoreCheck:
    """GET /api/orders/feed/config: 200 or 404 means VTEX took the credentials; 401/403 means it did not."""
    client = VtexClient(base_url=base_url, app_key=app_key, app_token=app_token, timeout=timeout)
    try:
        client.feed_config_get()
    except VtexUnavailable as exc:
        if exc.status is None:  # no HTTP answer at all
            cause = _vtex_cause(exc, timeout)
            return StoreCheck("VTEX", "failed", f"not reachable: {cause} ({redact_url(base_url)}) — {VTEX_HINT}")
        # 429/5xx/broken JSON: VTEX answered, so the host is right; the credentials are simply not proven.
        return StoreCheck("VTEX credentials", "warning",
                          f"not confirmed (HTTP {exc.status}: VTEX could not answer now); saving anyway")
    except VtexError as exc:
        if exc.status in (401, 403):
            return StoreCheck("VTEX credentials", "failed",
                              f"REFUSED (HTTP {exc.status}) — check the app key and token, and that the appKey's "
                              "role can read orders")
        if exc.status == 404:
            return StoreCheck("VTEX credentials", "ok",
                              "ok (feed not configured yet: the hub pushes the default filter when you save it "
                              "under Feed configs in the admin)")
        return StoreCheck("VTEX credentials", "warning",
                          f"not confirmed (unexpected HTTP {exc.status} to GET /api/orders/feed/config) — {VTEX_HINT}")
    finally:
        client.close()
    return StoreCheck("VTEX credentials", "ok", "ok (feed configured)")


def erp_reachability_check(*, url: str, headers: dict[str, str], timeout: float) -> StoreCheck:
    """HEAD the ERP URL with the store's headers: any HTTP answer, even 404/405/501, proves it is reachable.

    HEAD, not POST: a check must never create an order in the ERP.
    """
    session = new_session(url)
    session.headers.update({str(name): str(value) for name, value in headers.items()})
    try:
        response = session.head(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        _, cause = classify_failure(exc, timeout=timeout)  # the same words as for VTEX
        return StoreCheck("ERP", "failed", f"not reachable: {cause} ({redact_url(url)}) — {ERP_HINT}")
    finally:
        session.close()
    text = f"reachable (HTTP {response.status_code} to HEAD)"
    if response.status_code in (401, 403):
        text += "; if the ERP checks credentials on every method, check the ERP headers"
    return StoreCheck("ERP", "ok", text)


def store_checks_run(target: ConnectionTarget, *,
                     report: Callable[[StoreCheck], Any] | None = None) -> list[StoreCheck]:
    """Both checks, each reported as soon as it is known (the VTEX one may take up to its timeout)."""
    vtex_timeout = min(float(settings.HUB_HTTP_TIMEOUT_SECONDS), MAX_CHECK_SECONDS)
    checks: list[StoreCheck] = []
    for run in (
        lambda: vtex_credentials_check(base_url=target.vtex_base_url, app_key=target.app_key,
                                       app_token=target.app_token, timeout=vtex_timeout),
        lambda: erp_reachability_check(url=target.erp_url, headers=target.erp_headers,
                                       timeout=min(target.erp_timeout, MAX_CHECK_SECONDS)),
    ):
        checks.append(check := run())
        if report:
            report(check)
    return checks


def connection_target(**values: Any) -> ConnectionTarget:
    """What store_connect(**values) would save, without saving it; raises its ValidationError for bad input.

    The same function validates and merges (given values over stored ones) as the real write, and is
    rolled back: so the checks see exactly what would be saved, and no HTTP call runs in a transaction.
    """
    with transaction.atomic():
        store = store_connect(**values).store
        target = ConnectionTarget(
            vtex_base_url=store.vtex_base_url, app_key=store.app_key, app_token=store.app_token,
            erp_url=store.erp.url, erp_headers=dict(store.erp.headers or {}), erp_timeout=store.erp.timeout_seconds,
        )
        transaction.set_rollback(True)
    return target


def store_connect_checked(*, check: bool = True, report: Callable[[StoreCheck], Any] | None = None,
                          **values: Any) -> CheckedConnect:
    """store_connect, after checking VTEX and the ERP with the resulting values; check=False skips the checks.

    Raises ValidationError (bad input) or StoreCheckFailed (a check failed); either way nothing is written.
    """
    checks: list[StoreCheck] = []
    if check:
        checks = store_checks_run(connection_target(**values), report=report)
        if any(item.failed for item in checks):
            raise StoreCheckFailed(checks)
    return CheckedConnect(result=store_connect(**values), checks=checks)
