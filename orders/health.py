"""`/healthz` for load balancers and uptime monitors: the database answers and no job is down.

No login, so it shows only store names, job ages and badges: no secrets, no order or customer data.
"""

from __future__ import annotations

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from feeds.models import Store
from orders.dashboard import JobHealth, job_health


def _job(health: JobHealth) -> dict:
    seconds = round(health.age_seconds) if health.age_seconds is not None else None
    return {"seconds": seconds, "status": health.badge}


def health_report() -> tuple[bool, dict]:
    """(healthy, the JSON body): the same late/down rules as the dashboard's badges."""
    now = timezone.now()
    try:
        stores = list(Store.objects.order_by("name").values_list("name", "enabled", "last_pull_at",
                                                                 "last_dispatch_at"))
    except DatabaseError as exc:
        return False, {"status": "down", "database": f"error: {type(exc).__name__}", "stores": []}
    report = []
    for name, enabled, pulled_at, dispatched_at in stores:
        pull = job_health(pulled_at, enabled=enabled, now=now)
        dispatch = job_health(dispatched_at, enabled=enabled, now=now)
        report.append({"name": name, "pull": _job(pull), "dispatch": _job(dispatch)})
    healthy = not any(job["status"] == "down" for store in report for job in (store["pull"], store["dispatch"]))
    return healthy, {"status": "ok" if healthy else "down", "database": "ok", "stores": report}


@never_cache
@require_safe  # GET and HEAD: some load balancers probe with HEAD
def healthz(request: HttpRequest) -> JsonResponse:
    healthy, body = health_report()
    response = JsonResponse(body, status=200 if healthy else 503)
    # Django logs every 5xx as an ERROR; a monitor probing a down hub every few seconds would flood the log.
    response._has_been_logged = True  # the flag django.utils.log.log_response checks
    return response
