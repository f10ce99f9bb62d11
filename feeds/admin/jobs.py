"""django-q2's job pages under our permission checks, and the one rule for what the job cluster may run.

django-q2 registers its own ModelAdmins: *Resubmit* checks no permission and re-runs any recorded
function, and the schedule form accepts any dotted path (`os.system`). We replace them:

- Successful / Failed / Queued tasks are read-only records. Deleting them and *Resubmit* need
  `core.manage_jobs` ("Can re-run or delete job records", made by orders/migrations/0005_manage_jobs_permission.py
  on the Store content type, core's since core/migrations/0001, next to `core.run_jobs`; Administrator has it).
- Only the hub's own task functions can be resubmitted, attributed to the user who clicked (a `by`
  argument is replaced). Tasks that act on one order (they take a `sync_id`) are refused: the
  order's Retry/Resend actions check the order's state first and put the request on its timeline.
- Schedules are made by `manage.py setup_schedules` only: no one adds, edits or deletes them here.
  Staff with `core.run_jobs` may pause and resume them.
- The cluster itself refuses every other function (core/job_control.py, on django-q2's `pre_enqueue`).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django_q.admin import FailAdmin, QueueAdmin, ScheduleAdmin, TaskAdmin
from django_q.models import Failure, OrmQ, Schedule, Success

from core.job_control import (
    MANAGE_JOBS, PAUSED_UNTIL, RUN_JOBS, ResubmitRefused, hub_task, schedule_set_paused, task_resubmit,
)


class JobRecordAdmin(admin.ModelAdmin):
    """Task records are what happened: read-only; deleting or re-running them needs core.manage_jobs."""

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
        self._set_paused(request, queryset, paused=True, verb="Paused")

    @admin.action(description="Resume selected schedules (run now, then as scheduled)", permissions=["run_jobs"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_paused(request, queryset, paused=False, verb="Resumed")

    def _set_paused(self, request: HttpRequest, queryset: QuerySet, *, paused: bool, verb: str) -> None:
        if not self.has_run_jobs_permission(request):
            self.message_user(request, "You may not pause or resume schedules.", messages.ERROR)
            return
        changed = 0
        for schedule in queryset:
            if schedule_set_paused(schedule_id=schedule.pk, paused=paused):
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
