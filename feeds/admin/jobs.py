"""django-q2's job pages under our permission checks, and the one rule for what the job cluster may run.

django-q2 registers its own ModelAdmins: *Resubmit* checks no permission and re-runs any recorded
function, and the schedule form accepts any dotted path (`os.system`). We replace them:

- Successful / Failed / Queued tasks are read-only records. Deleting them and *Resubmit* need
  `feeds.manage_jobs` ("Can re-run or delete job records", made by orders/migrations/0005_manage_jobs_permission.py
  on the Store content type, next to `feeds.run_jobs`; Administrator has it).
- Only the hub's own task functions can be resubmitted, attributed to the user who clicked (a `by`
  argument is replaced). Tasks that act on one order (they take a `sync_id`) are refused: the
  order's Retry/Resend actions check the order's state first and put the request on its timeline.
- Schedules are made by `manage.py setup_schedules` only: no one adds, edits or deletes them here.
  Staff with `feeds.run_jobs` may pause and resume them.
- The cluster itself refuses every other function (`refuse_foreign_tasks`, on django-q2's `pre_enqueue`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from datetime import datetime, timezone as dt_timezone

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone
from django_q.admin import FailAdmin, QueueAdmin, ScheduleAdmin, TaskAdmin
from django_q.models import Failure, OrmQ, Schedule, Success, Task
from django_q.signals import pre_enqueue
from django_q.tasks import async_task
from django_q.utils import get_func_repr

logger = logging.getLogger(__name__)

MANAGE_JOBS = "feeds.manage_jobs"
RUN_JOBS = "feeds.run_jobs"
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
    # Defined in that module, not merely imported into it (feeds.tasks.lease_take is feeds.leases').
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


# Connected here because admin autodiscovery imports this module in every process that sets Django
# up, the job cluster included. Every task (scheduled, queued by code, resubmitted) passes here first.
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


class JobRecordAdmin(admin.ModelAdmin):
    """Task records are what happened: read-only; deleting or re-running them needs feeds.manage_jobs."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self.has_manage_jobs_permission(request)

    def has_manage_jobs_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(MANAGE_JOBS)


class TaskRecordAdmin(JobRecordAdmin):
    actions = ["resubmit"]

    @admin.action(description="Resubmit selected tasks to queue", permissions=["manage_jobs"])
    def resubmit(self, request: HttpRequest, queryset: QuerySet) -> None:
        # Checked again here: the action's permissions only filter the list Django offers and accepts.
        if not self.has_manage_jobs_permission(request):
            self.message_user(request, "You may not re-run job records.", messages.ERROR)
            return
        tasks = list(queryset)
        done = 0
        for task in tasks:
            try:
                task_resubmit(task=task, by=request.user.get_username())
            except ResubmitRefused as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            done += 1
            if isinstance(task, Failure):
                task.delete()  # as django-q2 does: the new run makes its own record
        self.message_user(request, f"{done} of {len(tasks)} task(s) resubmitted",
                          messages.SUCCESS if done else messages.WARNING)


class SuccessAdmin(TaskRecordAdmin, TaskAdmin):
    pass


class FailureAdmin(TaskRecordAdmin, FailAdmin):
    pass


class OrmQAdmin(JobRecordAdmin, QueueAdmin):
    """The queue as the cluster will read it; `key` and `lock` are not editable either."""


class HubScheduleAdmin(ScheduleAdmin):
    """Schedules are setup_schedules' own: shown, paused and resumed here, never added, edited or deleted."""

    list_display = (*ScheduleAdmin.list_display, "paused", "hub_function")
    actions = ["pause", "resume"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the change page is read-only for everyone, superusers included: func is never a form field

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # pause instead; setup_schedules would recreate a deleted one anyway

    def has_run_jobs_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_JOBS)

    @admin.display(boolean=True, description="Paused")
    def paused(self, obj: Schedule) -> bool:
        return obj.next_run is not None and obj.next_run >= PAUSED_UNTIL

    @admin.display(boolean=True, description="Hub task")
    def hub_function(self, obj: Schedule) -> bool:
        return hub_task(obj.func) is not None  # False: the cluster refuses to run it

    @admin.action(description="Pause selected schedules", permissions=["run_jobs"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_next_run(request, queryset.filter(next_run__lt=PAUSED_UNTIL), PAUSED_UNTIL, "Paused")
        self.message_user(request, "A paused schedule no longer starts its job. pull_feeds and dispatch_orders "
                                   "also queue their own next run: disable a store to stop its work at once.",
                          messages.INFO)

    @admin.action(description="Resume selected schedules (run now, then as scheduled)", permissions=["run_jobs"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_next_run(request, queryset.filter(next_run__gte=PAUSED_UNTIL), timezone.now(), "Resumed")

    def _set_next_run(self, request: HttpRequest, queryset: QuerySet, next_run: datetime, verb: str) -> None:
        if not self.has_run_jobs_permission(request):
            self.message_user(request, "You may not pause or resume schedules.", messages.ERROR)
            return
        changed = 0
        for schedule in queryset:
            # One UPDATE each, guarded, so a scheduler pass that holds the row finishes first and cannot undo it.
            if Schedule.objects.filter(pk=schedule.pk).update(next_run=next_run):
                self.log_change(request, schedule, f"{verb} by {request.user.get_username()}")
                changed += 1
        self.message_user(request, f"{verb} {changed} schedule(s)", messages.SUCCESS if changed else messages.WARNING)


for _model in (Schedule, Success, Failure, OrmQ):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
admin.site.register(Schedule, HubScheduleAdmin)
admin.site.register(Success, SuccessAdmin)
admin.site.register(Failure, FailureAdmin)
admin.site.register(OrmQ, OrmQAdmin)
