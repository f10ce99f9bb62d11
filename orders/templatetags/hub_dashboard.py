"""{% hub_dashboard %}: the operations dashboard on the admin index (figures from orders.dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

from integrationhub.personal_data import for_user
from orders.charts import bar_chart_svg
from orders.dashboard import StoreHealth, dashboard_build

register = template.Library()


@dataclass(frozen=True)
class DashboardRow:
    health: StoreHealth
    run_pull_url: str  # "" hides the button
    run_dispatch_url: str


def _run_urls(store_id: int) -> tuple[str, str]:
    try:
        return (reverse("admin:feeds_store_run", args=[store_id, "pull"]),
                reverse("admin:feeds_store_run", args=[store_id, "dispatch"]))
    except NoReverseMatch:  # the run-now view belongs to feeds/admin.py and may not be deployed yet
        return "", ""


@register.inclusion_tag("admin/hub/dashboard.html", takes_context=True)
def hub_dashboard(context: template.Context) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.has_perm("orders.view_ordersync"):
        return {"show": False}
    board = dashboard_build()
    can_run = user.has_perm("feeds.run_jobs")
    rows = [DashboardRow(health, *(_run_urls(health.store_id) if can_run else ("", ""))) for health in board.stores]
    return {
        "show": True,
        "viewer": user,  # for the |personal filter: error texts quote VTEX and the ERP
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
    """A duration for people: "45 s", "12 min", "3 h 5 min", "2 d 4 h" (the sign is the template's business)."""
    if seconds is None:
        return "—"
    seconds = abs(int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
