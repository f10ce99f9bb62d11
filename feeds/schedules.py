"""The hub's django-q2 schedules, declared idempotently."""

from __future__ import annotations

from django_q.models import Schedule

SCHEDULES = {
    "pull_feeds": "feeds.tasks.pull_feeds",
    "dispatch_orders": "orders.tasks.dispatch_orders",
}


def schedules_setup() -> list[str]:
    """Create or update every schedule by name (running it twice changes nothing); returns what it created."""
    created = []
    for name, func in SCHEDULES.items():
        _, was_created = Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
        )
        if was_created:
            created.append(name)
    return created
