"""{% hub_dashboard %}: the operations dashboard on the admin index (figures from orders.dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

from integrationhub.personal_data import for_user
from orders.charts import bar_chart_svg
from orders.dashboard import (
    QUEUE_EXPLAINED,
    QUEUE_SOURCE,
    StoreHealth,
    VtexSide,
    age_text,
    ago,
    dashboard_build,
    vtex_side_build,
    when,
)
from orders.health_signals import health_signals

register = template.Library()


@dataclass(frozen=True)
class DashboardRow:
    health: StoreHealth
    run_pull_url: str  # "" hides the button
    run_dispatch_url: str
    side: VtexSide | None = None  # sources of the last 24 h, hook refusals, configurations on VTEX
    reapply_feed_url: str = ""  # "" hides the button (no feeds.change_feedconfig, or nothing to re-apply)
    reapply_hook_url: str = ""


def _reapply_urls(side: VtexSide | None) -> tuple[str, str]:
    """*Re-apply* for what VTEX no longer has: the hub's copy is pushed again (feeds.change_feedconfig)."""
    if side is None or side.config_id is None:
        return "", ""
    feed = side.feed in ("missing", "removed")
    return (reverse("admin:feeds_feedconfig_reapply", args=[side.config_id, "feed"]) if feed else "",
            reverse("admin:feeds_feedconfig_reapply", args=[side.config_id, "hook"]) if side.hook == "missing" else "")


def _run_urls(store_id: int) -> tuple[str, str]:
    try:
        return (reverse("admin:core_store_run", args=[store_id, "pull"]),
                reverse("admin:core_store_run", args=[store_id, "dispatch"]))
    except NoReverseMatch:  # the run-now view belongs to feeds/admin.py and may not be deployed yet
        return "", ""


@register.inclusion_tag("admin/hub/dashboard.html", takes_context=True)
def hub_dashboard(context: template.Context) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.has_perm("orders.view_ordersync"):
        return {"show": False}
    board = dashboard_build()
    can_run = user.has_perm("core.run_jobs")
    sides = vtex_side_build(now=board.now)
    can_reapply = user.has_perm("feeds.change_feedconfig")
    rows = [DashboardRow(health, *(_run_urls(health.store_id) if can_run else ("", "")), sides.get(health.store_id),
                         *(_reapply_urls(sides.get(health.store_id)) if can_reapply else ("", "")))
            for health in board.stores]
    return {
        "show": True,
        # The alerts' own signals, from the figures above: the dashboard warns of what an alert would say.
        "warnings": health_signals(now=board.now, healths=board.stores),
        "viewer": user,  # for the |personal filter: error texts quote VTEX and the ERP
        "here": request.get_full_path(),  # Pull now / Dispatch now come back to this page
        "queue_source": QUEUE_SOURCE,
        "queue_explained": QUEUE_EXPLAINED,
        "board": board,
        "rows": rows,
        "handled_chart": bar_chart_svg(board.handled_per_hour, title="Orders handled per hour", color="#198754"),
        "failures_chart": bar_chart_svg(board.failures_per_hour, title="Failures per hour (retries and parked)",
                                        color="var(--error-fg)"),
    }


@register.filter
def personal(value: Any, user: Any) -> Any:
    """`{{ text|personal:viewer }}`: the text as this user may see it (personal data masked without permission)."""
    return for_user(user, value)


@register.filter
def hub_age(seconds: float | None) -> str:
    """A duration for people: "45 s", "12 min", "3 h 5 min", "2 d 4 h" (orders.dashboard.age_text)."""
    return age_text(seconds)


@register.filter
def hub_when(moment: datetime | None) -> str:
    """The hub's one date format: "2026-11-28 14:03:07 UTC" (orders.dashboard.when)."""
    return when(moment)


@register.filter
def hub_ago(moment: datetime | None) -> str:
    """ "3 min ago" (or "never"), in the same units as every other age in the hub."""
    return ago(moment)
