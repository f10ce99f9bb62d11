"""django-q2's pages under our rules: resubmit and delete need core.manage_jobs, schedules are never written
from the admin, and the cluster runs nothing but the hub's task functions."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Task
from django_q.scheduler import scheduler
from django_q.tasks import async_task

from core.job_control import PAUSED_UNTIL, foreign_task_refused, hub_task, schedule_set_paused
from core.models import Store
from feeds.schedules import schedules_setup
from tests.admin.conftest import action_ran

pytestmark = pytest.mark.usefixtures("jobs_queued")


def task_record(func: str, *args: object, success: bool = False, **kwargs: object) -> Task:
    now = timezone.now()
    return Task.objects.create(id=uuid4().hex, name=f"rec-{uuid4().hex[:6]}", func=func, args=args, kwargs=kwargs,
                               started=now, stopped=now, success=success, result="boom")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_action(client: Client, model: str, action: str, *pks: object):
    return client.post(reverse(f"admin:django_q_{model}_changelist"),
                       {"action": action, "_selected_action": [str(pk) for pk in pks], "index": "0"})


def shown(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def queued() -> list[dict]:
    return [row.task for row in OrmQ.objects.order_by("id")]


@pytest.fixture
def store(db) -> Store:
    return Store.objects.create(name="acme", account="acme", base_url="http://127.0.0.1:9", app_key="k",
                                app_token="t")


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser("root", "root@example.invalid", "pw")


def test_only_administrators_may_manage_job_records_and_no_group_may_write_schedules(staff_member):
    rights = {group: (user.has_perm("core.manage_jobs"), user.has_perm("core.run_jobs"),
                      user.has_perm("django_q.add_schedule") or user.has_perm("django_q.change_schedule"))
              for group in ["Viewer", "Operator", "Administrator"] for user in [staff_member(group)]}

    assert rights == {"Viewer": (False, False, False), "Operator": (False, True, False),
                      "Administrator": (True, True, False)}


# --- task records ------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["Viewer", "Operator"])
def test_only_those_who_manage_jobs_may_resubmit_or_delete_a_failed_task(staff_member, store, group):
    user = staff_member(group)
    failure = task_record("orders.tasks.dispatch_store", store.pk, "schedule")

    resubmitted = post_action(logged_in(user), "failure", "resubmit", failure.pk)
    deleted = post_action(logged_in(user), "failure", "delete_selected", failure.pk)
    delete_page = logged_in(user).post(reverse("admin:django_q_failure_delete", args=[failure.pk]), {"post": "yes"})

    assert not action_ran(resubmitted) and not action_ran(deleted)
    assert delete_page.status_code == 403
    assert Task.objects.filter(pk=failure.pk).exists() and queued() == []
    assert logged_in(user).get(reverse("admin:django_q_failure_change", args=[failure.pk])).status_code == 200  # reads


def test_resubmit_runs_the_task_again_as_the_user_who_clicked(staff_member, store):
    admin = staff_member("Administrator")
    failure = task_record("orders.tasks.dispatch_store", store.pk, "otto-operator")

    response = post_action(logged_in(admin), "failure", "resubmit", failure.pk)

    assert "1 of 1 task(s) resubmitted" in shown(response)
    [task] = queued()
    assert (task["func"], task["args"], task["kwargs"]) == (
        "orders.tasks.dispatch_store", (store.pk, admin.username), {})
    assert task["name"] == f"{failure.name} (resubmitted by {admin.username})"
    assert not Task.objects.filter(pk=failure.pk).exists()  # the new run makes its own record


def test_a_successful_task_is_resubmitted_with_its_keyword_arguments_and_kept(staff_member):
    success = task_record("feeds.tasks.pull_feeds", success=True, continuous=True)

    post_action(logged_in(staff_member("Administrator")), "success", "resubmit", success.pk)

    assert [(t["func"], t["args"], t["kwargs"]) for t in queued()] == [
        ("feeds.tasks.pull_feeds", (), {"continuous": True})]
    assert Task.objects.filter(pk=success.pk).exists()


@pytest.mark.parametrize("func", ["orders.tasks.resend_order", "orders.tasks.process_order"])
def test_order_tasks_are_not_resubmitted_even_by_an_administrator(staff_member, func):
    failure = task_record(func, 41, "otto-operator")

    response = post_action(logged_in(staff_member("Administrator")), "failure", "resubmit", failure.pk)

    assert any("use the order's Retry/Resend action instead" in m for m in shown(response))
    assert "0 of 1 task(s) resubmitted" in shown(response)
    assert queued() == [] and Task.objects.filter(pk=failure.pk).exists()


@pytest.mark.parametrize("func", ["os.system", "feeds.tasks.lease_take", "feeds.tasks._private",
                                  "feeds.tasks.time.sleep", "orders.tasks.settings"])
def test_a_record_of_any_other_function_is_not_resubmitted(superuser, func):
    failure = task_record(func, "id")

    response = post_action(logged_in(superuser), "failure", "resubmit", failure.pk)

    assert f"{failure.name}: {func} is not one of the hub's task functions" in shown(response)
    assert queued() == []


def test_a_record_whose_arguments_no_longer_fit_is_not_resubmitted(superuser):
    failure = task_record("feeds.tasks.pull_store", 1, 2, 3)

    response = post_action(logged_in(superuser), "failure", "resubmit", failure.pk)

    assert any("its arguments no longer fit" in m for m in shown(response)) and queued() == []


def test_queued_tasks_are_read_only_and_only_managers_delete_them(staff_member, superuser):
    async_task("feeds.tasks.refresh_queue_status")
    row = OrmQ.objects.get()
    operator = logged_in(staff_member("Operator"))

    change = operator.post(reverse("admin:django_q_ormq_change", args=[row.pk]), {"key": "other", "lock": ""})
    delete = operator.post(reverse("admin:django_q_ormq_delete", args=[row.pk]), {"post": "yes"})
    root_change = logged_in(superuser).post(reverse("admin:django_q_ormq_change", args=[row.pk]), {"key": "other"})

    assert (change.status_code, delete.status_code, root_change.status_code) == (403, 403, 403)
    assert OrmQ.objects.get().key == row.key
    admin = logged_in(staff_member("Administrator"))
    assert admin.post(reverse("admin:django_q_ormq_delete", args=[row.pk]), {"post": "yes"}).status_code == 302
    assert not OrmQ.objects.exists()


# --- schedules ---------------------------------------------------------------------------------------

OS_SYSTEM = {"name": "pwn", "func": "os.system", "args": "'touch /tmp/pwned'", "schedule_type": "O",
             "repeats": "-1", "next_run_0": "2026-01-01", "next_run_1": "00:00:00", "minutes": "", "cron": ""}


@pytest.mark.parametrize("who", ["Administrator", "superuser"])
def test_no_one_adds_or_edits_a_schedule_from_the_admin(staff_member, superuser, who):
    client = logged_in(superuser if who == "superuser" else staff_member(who))
    schedules_setup()
    pull = Schedule.objects.get(name="pull_feeds")

    add_page = client.get(reverse("admin:django_q_schedule_add"))
    added = client.post(reverse("admin:django_q_schedule_add"), OS_SYSTEM)
    changed = client.post(reverse("admin:django_q_schedule_change", args=[pull.pk]),
                          {**OS_SYSTEM, "name": "pull_feeds"})
    deleted = client.post(reverse("admin:django_q_schedule_delete", args=[pull.pk]), {"post": "yes"})

    assert (add_page.status_code, added.status_code, changed.status_code, deleted.status_code) == (403, 403, 403, 403)
    assert sorted(Schedule.objects.values_list("func", flat=True)) == sorted(
        ["feeds.tasks.pull_feeds", "orders.tasks.dispatch_orders", "feeds.tasks.refresh_queue_status",
         "orders.tasks.reconcile_orders", "orders.tasks.evaluate_alerts", "orders.tasks.prune_history"])
    page = client.get(reverse("admin:django_q_schedule_change", args=[pull.pk]))
    assert page.status_code == 200 and b'name="func"' not in page.content  # shown, not a form field


def test_operators_pause_and_resume_schedules_and_setup_keeps_a_pause(staff_member):
    operator = staff_member("Operator")
    schedules_setup()
    pull = Schedule.objects.get(name="pull_feeds")

    post_action(logged_in(operator), "schedule", "pause", pull.pk)

    pull.refresh_from_db()
    assert pull.next_run == PAUSED_UNTIL
    assert LogEntry.objects.get(object_id=str(pull.pk)).get_change_message() == f"Paused by {operator.username}"
    schedules_setup()  # a deploy runs it again: it does not set next_run, so the pause holds
    pull.refresh_from_db()
    assert pull.next_run == PAUSED_UNTIL

    before = timezone.now()
    post_action(logged_in(operator), "schedule", "resume", pull.pk)

    pull.refresh_from_db()
    assert before <= pull.next_run <= timezone.now()


def test_a_viewer_cannot_pause_a_schedule(staff_member):
    schedules_setup()
    pull = Schedule.objects.get(name="pull_feeds")
    next_run = pull.next_run

    response = post_action(logged_in(staff_member("Viewer")), "schedule", "pause", pull.pk)

    assert not action_ran(response)
    pull.refresh_from_db()
    assert pull.next_run == next_run


# --- the cluster's own guard -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the scheduler closes the connection, as in the cluster
def test_the_scheduler_queues_a_refusal_instead_of_a_foreign_function():
    due = timezone.now() - timedelta(minutes=1)
    Schedule.objects.create(name="pwn", func="os.system", args="'touch /tmp/pwned'", hook="os.system",
                            schedule_type=Schedule.MINUTES, minutes=1, repeats=-1, next_run=due)
    Schedule.objects.create(name="ours", func="feeds.tasks.refresh_queue_status", schedule_type=Schedule.MINUTES,
                            minutes=5, repeats=-1, next_run=due)

    scheduler()

    tasks = {task["group"]: task for task in queued()}
    assert (tasks["ours"]["func"], tasks["ours"]["args"]) == ("feeds.tasks.refresh_queue_status", ())
    assert (tasks["pwn"]["func"], tasks["pwn"]["args"]) == ("core.job_control.foreign_task_refused", ("os.system",))
    assert "hook" not in tasks["pwn"]
    with pytest.raises(PermissionError, match="refused to run 'os.system'"):
        foreign_task_refused(*tasks["pwn"]["args"])


def test_tasks_queued_by_code_pass_the_same_guard(db):
    async_task("os.getcwd")
    async_task("orders.tasks.dispatch_store", 7, "otto")

    assert [(t["func"], t["args"]) for t in queued()] == [
        ("core.job_control.foreign_task_refused", ("os.getcwd",)), ("orders.tasks.dispatch_store", (7, "otto"))]


def test_only_public_functions_defined_in_the_task_modules_are_hub_tasks():
    from feeds import tasks as feeds_tasks

    assert hub_task("feeds.tasks.pull_feeds") is feeds_tasks.pull_feeds
    assert hub_task(feeds_tasks.pull_feeds) is feeds_tasks.pull_feeds
    refused = ["os.system", "feeds.tasks.lease_take", "feeds.tasks.settings", "feeds.tasks.time.sleep",
               "feeds.tasksX.pull_feeds", "", "pull_feeds", "core.job_control.foreign_task_refused"]
    assert [hub_task(path) for path in refused] == [None] * len(refused)


def test_a_paused_chained_job_stops_queueing_its_next_run(settings, db):
    from orders.tasks import dispatch_orders

    settings.HUB_JOB_BUDGET_SECONDS = 0.1
    schedules_setup()
    schedule = Schedule.objects.get(name="dispatch_orders")

    dispatch_orders(continuous=True)
    # The chain goes on, and a second run is queued for the free run slot (HUB_DISPATCH_RUNS).
    assert [task["func"] for task in queued()] == ["orders.tasks.dispatch_orders"] * 2

    OrmQ.objects.all().delete()
    assert schedule_set_paused(schedule_id=schedule.pk, paused=True)
    dispatch_orders(continuous=True)
    assert queued() == []  # paused: the running chain ends instead of queueing itself again
