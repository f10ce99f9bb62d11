"""What the job cluster may run, re-running recorded tasks, and pausing schedules.

django-q2 runs any importable function a schedule or a queued task names, and its admin re-runs any
recorded one. The hub narrows both to its own task functions (public functions defined in
feeds.tasks or orders.tasks); feeds/admin/jobs.py puts staff's buttons on top of this.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from datetime import datetime, timezone as dt_timezone

from django.dispatch import receiver
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.signals import pre_enqueue
from django_q.tasks import async_task
from django_q.utils import get_func_repr

logger = logging.getLogger("hub.jobs")

# On the Store content type, which moved with Store from feeds to core (core/migrations/0001_initial.py).
MANAGE_JOBS = "core.manage_jobs"
RUN_JOBS = "core.run_jobs"
HUB_TASK_MODULES = ("feeds.tasks", "orders.tasks")
# django-q2's Schedule has no paused flag: a paused schedule is due in the year 9999, so the scheduler
# (next_run < now) never picks it up, and setup_schedules (which does not set next_run) keeps it paused.
PAUSED_UNTIL = datetime(9999, 1, 1, tzinfo=dt_timezone.utc)


class ResubmitRefused(Exception):
    """This task record may not be run again from the admin; the message says why."""


def hub_task(func: object) -> Callable | None:
    """The task function `func` names if it is one of the hub's (a public function of feeds.tasks or orders.tasks)."""
    path = get_func_repr(func) or ""
    module_name, _, name = path.rpartition(".")
    if module_name not in HUB_TASK_MODULES or not name or name.startswith("_"):
        return None
    target = getattr(importlib.import_module(module_name), name, None)
    # Defined in that module, not merely imported into it (feeds.tasks.lease_release is core.leases').
    if not inspect.isfunction(target) or target.__module__ != module_name:
        return None
    if callable(func) and func is not target:
        return None
    return target


def task_resubmit(*, task: Task, by: str) -> str:
    """Queue the recorded task again as `by`'s; returns the new task id or raises ResubmitRefused."""
    target = hub_task(task.func)
    if target is None:
        raise ResubmitRefused(f"{task.name}: {task.func} is not one of the hub's task functions")
    signature = inspect.signature(target)
    parameters = list(signature.parameters)
    if "sync_id" in parameters:
        # process_order, resend_order: run again as they are, they would skip the order's state check
        # (a resolved order resent) and its timeline entry saying who asked.
        raise ResubmitRefused(f"{task.name}: {task.func} acts on one order: use the order's Retry/Resend action "
                              f"instead")
    if task.hook:
        raise ResubmitRefused(f"{task.name}: it has a result hook ({task.hook}); the hub's tasks have none")
    args, kwargs = list(task.args or ()), dict(task.kwargs or {})
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ResubmitRefused(f"{task.name}: its arguments no longer fit {task.func} ({exc})") from exc
    if "by" in parameters:  # the new run is done by who clicked, not by who queued the original
        if parameters.index("by") < len(args):
            args[parameters.index("by")] = by
        else:
            kwargs["by"] = by
    return async_task(task.func, *args, task_name=f"{task.name} (resubmitted by {by})"[:100], group=task.group,
                      **kwargs)


def foreign_task_refused(func: str) -> None:
    """What the cluster runs instead of a function that is not the hub's: fails, naming it."""
    raise PermissionError(f"refused to run {func!r}: not one of the hub's task functions (feeds.tasks, orders.tasks)")


# Every task (scheduled, queued by code, resubmitted) passes here before it is queued. Connected when
# this module is imported: CoreConfig.ready() imports it in every process, the job cluster included.
@receiver(pre_enqueue, dispatch_uid="hub_refuse_foreign_tasks")
def refuse_foreign_tasks(sender: object, task: dict, **kwargs: object) -> None:
    """The cluster runs only the hub's task functions, and no result hook (the hub sets none)."""
    if hook := task.pop("hook", None):
        logger.warning("dropped the result hook %r of task %s: the hub runs no hooks", hook, task.get("name"))
    if hub_task(task["func"]) is None:
        func = get_func_repr(task["func"])
        logger.error("refused to run %r (task %s): not one of the hub's task functions", func, task.get("name"))
        # Swapped rather than raised: raising here would abort the scheduler's whole pass, every schedule
        # included. The swapped task fails and its failure record names the refused function.
        task["func"], task["args"], task["kwargs"] = f"{__name__}.foreign_task_refused", (func,), {}




def schedule_paused(name: str) -> bool:
    """Whether staff paused this schedule; a chained job then stops queueing its own next run."""
    return Schedule.objects.filter(name=name, next_run__gte=PAUSED_UNTIL).exists()


def schedule_set_paused(*, schedule_id: int, paused: bool) -> bool:
    """Pause (due in the year 9999) or resume (due now) one schedule; False when it already was."""
    rows = Schedule.objects.filter(pk=schedule_id)
    rows = rows.filter(next_run__lt=PAUSED_UNTIL) if paused else rows.filter(next_run__gte=PAUSED_UNTIL)
    # One guarded UPDATE, so a scheduler pass that holds the row finishes first and cannot undo it.
    return bool(rows.update(next_run=PAUSED_UNTIL if paused else timezone.now()))
