"""The hub's django-q2 schedules, declared idempotently."""

from __future__ import annotations

from django.conf import settings
from django_q.models import Schedule

# name -> (task, every N minutes). pull_feeds and dispatch_orders queue their own next run (continuous=True);
# their schedule restarts the chain within a minute if a worker died.
SCHEDULES: dict[str, tuple[str, int]] = {
    "pull_feeds": ("feeds.tasks.pull_feeds", 1),
    "dispatch_orders": ("orders.tasks.dispatch_orders", 1),
    # VTEX's queue figures are approximate and only shown on the dashboard: every 5 minutes is enough.
    "refresh_queue_status": ("feeds.tasks.refresh_queue_status", 5),
    # A safety net on VTEX's List orders, which VTEX asks to use sparingly: every 15 minutes by default.
    "reconcile_orders": ("orders.tasks.reconcile_orders", 15),
    # Alerts compare the health signals with what staff were told; a quiet period limits the messages.
    "evaluate_alerts": ("orders.tasks.evaluate_alerts", 1),
    # History older than HUB_RETENTION_DAYS; a run that hits the job budget queues the next one itself.
    "prune_history": ("orders.tasks.prune_history", 24 * 60),
}


# Intervals staff may set in the environment (the setting's name), read each time setup_schedules runs.
INTERVAL_SETTINGS = {"reconcile_orders": "HUB_RECONCILE_MINUTES"}
CHAINED = {"pull_feeds", "dispatch_orders"}
CHAINED_KWARGS = "{'continuous': True}"  # django-q2 evaluates the kwargs text as a Python literal


def schedule_minutes(name: str, *, default: int) -> int:
    setting = INTERVAL_SETTINGS.get(name)
    return max(1, int(getattr(settings, setting, default))) if setting else default


def schedules_setup() -> list[str]:
    """Create or update every schedule by name (running it twice changes nothing); returns what it created."""
    created = []
    for name, (func, minutes) in SCHEDULES.items():
        minutes = schedule_minutes(name, default=minutes)
        _, was_created = Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1,
                      "kwargs": CHAINED_KWARGS if name in CHAINED else ""},
        )
        if was_created:
            created.append(name)
    return created
