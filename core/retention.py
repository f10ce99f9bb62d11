"""How long the hub keeps its history (HUB_RETENTION_DAYS), and the line the admin lists show about it.

The pruning itself is orders' (orders/services/prune.py); the event and order lists both show this line.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from django_q.models import Success

DEFAULT_RETENTION_DAYS = 90
PRUNE_TASK_FUNC = "orders.tasks.prune_history"  # its job records say what the last run removed


def retention_days() -> int:
    return max(1, int(getattr(settings, "HUB_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)))


def retention_text() -> str:
    """The line the admin lists show: the retention and what the last scheduled run removed."""
    text = f"History older than {retention_days()} days is pruned daily"
    last = (Success.objects.filter(func=PRUNE_TASK_FUNC).order_by("-stopped").values_list("stopped", "result")
            .first())
    if last is None:  # none yet, or dropped by Q_CLUSTER's save_limit (see docs/reliability.md, Retention)
        return f"{text} (no run among the job records)."
    stopped = timezone.localtime(last[0])
    return f"{text} (last run {stopped:%Y-%m-%d %H:%M} {stopped.tzname()}: {last[1]})."
