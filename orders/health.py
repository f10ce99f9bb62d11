"""`/healthz` for load balancers and uptime monitors: the database answers and no job is down.

No login, so it shows only store names, job ages and badges: no secrets, no order or customer data.
"""

from __future__ import annotations

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from orders.dashboard import JobHealth, stores_health


def _job(health: JobHealth) -> dict:
    seconds = round(health.age_seconds) if health.age_seconds is not None else None
    return {"seconds": seconds, "status": health.badge}


def health_report() -> tuple[bool, dict]:
    """(healthy, the JSON body), from the same per-store verdicts as the dashboard and the store pages.

    503 only when a job is down: a failing or blocked feed shows here with its cause at once, and turns
    into *down* once nothing has succeeded for HUB_DOWN_AFTER_SECONDS. Only the verdict's `cause` (the
    hub's own words) is shown, never its `detail`, which quotes VTEX or the ERP.
    """
    try:
        verdicts = stores_health(now=timezone.now())
    except DatabaseError as exc:
        return False, {"status": "down", "database": f"error: {type(exc).__name__}", "stores": []}
    report = [{"name": item.name, "health": item.verdict.status, "cause": item.verdict.cause,
               "pull": _job(item.pull), "dispatch": _job(item.dispatch)} for item in verdicts]
    healthy = not any(item.verdict.status == "down" for item in verdicts)
    return healthy, {"status": "ok" if healthy else "down", "database": "ok", "stores": report}


@never_cache
@require_safe  # GET and HEAD: some load balancers probe with HEAD
def healthz(request: HttpRequest) -> JsonResponse:
    healthy, body = health_report()
    response = JsonResponse(body, status=200 if healthy else 503)
    # Django logs every 5xx as an ERROR; a monitor probing a down hub every few seconds would flood the log.
    response._has_been_logged = True  # the flag django.utils.log.log_response checks
    return response
