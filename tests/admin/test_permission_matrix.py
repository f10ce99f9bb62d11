"""Every page, action and custom view of every ModelAdmin on the site, as Viewer, Operator and Administrator.

What a group may do is read from the admin's own declarations (has_*_permission, each action's
`allowed_permissions`) and from the permission each custom view checks, so pages other people change
stay covered; a few rules are pinned independently of any declaration: Viewers only read, every
action declares its permission, and the job pages' rules (PINNED). Each request is then made:
what is allowed must answer, what is refused must answer 403 (or be turned away, for actions) and
leave every table as it was, django-q2's queue included.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import uuid4

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db.models import Model
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Task
from django_q.tasks import async_task

from core.jobs import RUNNABLE
from core.models import ErpConnection, Store
from feeds.models import FeedConfig, FeedEvent
from orders.models import Alert, AlertChannel, ErpRequest, OrderSync, SyncAttempt
from orders.services.staff import ACTIONS, CONFIRMED_ACTIONS
from tests.admin.conftest import action_ran

GROUPS = ["Viewer", "Operator", "Administrator"]
REGISTRY: dict[str, admin.ModelAdmin] = {model._meta.label_lower: model_admin
                                         for model, model_admin in admin.site._registry.items()}
DEFAULT_URLS = ("changelist", "add", "history", "delete", "change")
_serial = itertools.count(1)


# --- one object per model ----------------------------------------------------------------------------

def _store() -> Store:
    n = next(_serial)
    # A closed local port: a page that calls VTEX (load from VTEX) gets a quick connection error.
    store = Store.objects.create(name=f"store-{n}", account=f"acct{n}", base_url="http://127.0.0.1:9",
                                 app_key="key", app_token="token")
    ErpConnection.objects.create(store=store, url="http://127.0.0.1:9/erp")
    return store


def _order() -> OrderSync:
    return OrderSync.objects.create(store=_store(), order_id=f"ORD-{next(_serial)}-01", state="needs_attention",
                                    erp_accepted_at=timezone.now(), order_snapshot={"status": "handling"})


def _task(success: bool, func: str = "feeds.tasks.pull_store") -> Task:
    now = timezone.now()
    return Task.objects.create(id=uuid4().hex, name=f"task-{next(_serial)}", func=func, args=(1,), kwargs={},
                               started=now, stopped=now, success=success, result="done" if success else "boom")


def _queued() -> OrmQ:
    async_task("feeds.tasks.refresh_queue_status")  # the jobs_queued fixture makes this an OrmQ row
    return OrmQ.objects.latest("id")


FACTORIES: dict[str, Callable[[], Model]] = {
    "auth.user": lambda: User.objects.create_user(f"someone-{next(_serial)}", password="pw", is_staff=True),
    "auth.group": lambda: Group.objects.create(name=f"spare-{next(_serial)}"),
    "django_q.schedule": lambda: Schedule.objects.create(name=f"s{next(_serial)}", func="feeds.tasks.pull_feeds",
                                                         schedule_type=Schedule.MINUTES, minutes=1, repeats=-1),
    "django_q.success": lambda: _task(success=True),
    "django_q.failure": lambda: _task(success=False),
    "django_q.ormq": _queued,
    "core.store": _store,
    "feeds.feedconfig": lambda: FeedConfig.objects.create(store=_store(), statuses=["ready-for-handling"]),
    "feeds.feedevent": lambda: FeedEvent.objects.create(store=_store(), event_id=uuid4().hex, order_id="ORD-1",
                                                        state="ready-for-handling", payload={"x": 1}, outcome="queued"),
    "orders.ordersync": _order,
    "orders.syncattempt": lambda: SyncAttempt.objects.create(order=_order(), step="erp_send", outcome="failed",
                                                             message="refused"),
    "orders.erprequest": lambda: ErpRequest.objects.create(
        order=_order(), kind="invoice", idempotency_key="invoice:NF-1", invoice_number="NF-1", invoice_type="Output",
        invoice_value=1000, payload={"type": "Output", "invoiceNumber": "NF-1", "invoiceValue": "1000", "items": []}),
    "orders.alertchannel": lambda: AlertChannel.objects.create(kind="webhook", target="https://hooks.example.com/T/s"),
    "orders.alert": lambda: Alert.objects.create(store=_store(), kind="jobs", severity="critical", message="Down",
                                                 first_at=timezone.now()),
}


# --- who may do what: the custom views and the pinned rules ------------------------------------------

@dataclass(frozen=True)
class CustomView:
    """One request to a view a ModelAdmin adds in get_urls, and who may make it (read from the view's code)."""

    args: Callable[[Model], list]
    may: Callable[[User, admin.ModelAdmin, Model], bool]
    method: str = "post"
    data: dict = field(default_factory=dict)
    allowed_status: int = 302
    reads: bool = False  # a read: Viewers may use it


def _perm(name: str) -> Callable[[User, admin.ModelAdmin, Model], bool]:
    return lambda user, model_admin, obj: user.has_perm(name)


CUSTOM_VIEWS: dict[str, dict[str, CustomView]] = {
    # orders/admin.py act_view: POST, orders.operate_orders.
    "orders_ordersync_act": {
        **{action: CustomView(args=lambda obj, action=action: [obj.pk, action], may=_perm("orders.operate_orders"),
                              data={"reason": "matrix"}, allowed_status=200 if action in CONFIRMED_ACTIONS else 302)
           for action in ACTIONS},
        # An action behind a confirmation page: the first POST shows it (200), the confirmed one acts.
        **{f"{action} confirmed": CustomView(args=lambda obj, action=action: [obj.pk, action],
                                             may=_perm("orders.operate_orders"),
                                             data={"reason": "matrix", "confirm": "yes"})
           for action in CONFIRMED_ACTIONS},
    },
    # orders/admin_stores.py run_view: POST, core.run_jobs; queues a job.
    "core_store_run": {
        kind: CustomView(args=lambda obj, kind=kind: [obj.pk, kind], may=_perm("core.run_jobs")) for kind in RUNNABLE
    },
    # Issue 10, orders/admin_stores.py rotate_erp_api_key_view: GET confirms, POST makes (and shows) a new key;
    # both need core.change_store, as the store's other credentials do.
    "core_store_rotate_erp_api_key": {
        "GET": CustomView(args=lambda obj: [obj.pk], may=_perm("core.change_store"), method="get",
                          allowed_status=200),
        "POST": CustomView(args=lambda obj: [obj.pk], may=_perm("core.change_store"), allowed_status=200),
    },
    # orders/admin_feed_config.py load_view: a read (VTEX's copy beside ours), saves nothing.
    "feeds_feedconfig_load": {
        "GET": CustomView(args=lambda obj: [obj.pk], may=_perm("feeds.view_feedconfig"), method="get",
                          allowed_status=200, reads=True),
    },
    # Issue 6: the expression tester is for those who may edit the feed config, via POST.
    "feeds_feedconfig_test_expression": {
        "POST": CustomView(args=lambda obj: [obj.pk], may=_perm("feeds.change_feedconfig"), allowed_status=200,
                           data={"expression": 'status = "handling"', "order_id": "ORD-1"}),
    },
    # Issue 8, orders/admin_feed_config.py: the order hook page reads; its buttons call VTEX with change rights.
    "feeds_feedconfig_hook": {
        "GET": CustomView(args=lambda obj: [obj.pk], may=_perm("feeds.view_feedconfig"), method="get",
                          allowed_status=200, reads=True),
    },
    "feeds_feedconfig_hook_push": {
        "POST": CustomView(args=lambda obj: [obj.pk], may=_perm("feeds.change_feedconfig")),
    },
    "feeds_feedconfig_hook_load": {
        "POST": CustomView(args=lambda obj: [obj.pk], may=_perm("feeds.change_feedconfig"), allowed_status=200),
    },
    "feeds_feedconfig_hook_delete": {
        "GET": CustomView(args=lambda obj: [obj.pk], may=_perm("feeds.change_feedconfig"), method="get",
                          allowed_status=200),
        "POST": CustomView(args=lambda obj: [obj.pk], may=_perm("feeds.change_feedconfig")),
    },
    "feeds_feedconfig_reapply": {
        what: CustomView(args=lambda obj, what=what: [obj.pk, what], may=_perm("feeds.change_feedconfig"),
                         data={"next": "/admin/"})
        for what in ("feed", "hook")
    },
    # django.contrib.auth's UserAdmin: the password form is a change of that user.
    "auth_user_password_change": {
        "GET": CustomView(args=lambda obj: [obj.pk], method="get", allowed_status=200,
                          may=lambda user, model_admin, obj: model_admin.has_change_permission(_request(user), obj)),
    },
}

# Held whatever the admins declare: the job pages' rules from issue 6 (label, check) -> groups allowed.
_RECORD_MANAGERS = {"Administrator"}  # core.manage_jobs
PINNED: dict[tuple[str, str], set[str]] = {
    **{(label, check): _RECORD_MANAGERS for label in ("django_q.success", "django_q.failure", "django_q.ormq")
       for check in ("GET delete", "POST delete", "action delete_selected")},
    ("django_q.success", "action resubmit"): _RECORD_MANAGERS,
    ("django_q.failure", "action resubmit"): _RECORD_MANAGERS,
    **{(label, check): set() for label in ("django_q.success", "django_q.failure", "django_q.ormq", "django_q.schedule")
       for check in ("GET add", "POST add", "POST change")},
    ("django_q.schedule", "GET delete"): set(),
    ("django_q.schedule", "POST delete"): set(),
    ("django_q.schedule", "action pause"): {"Operator", "Administrator"},  # core.run_jobs
    ("django_q.schedule", "action resume"): {"Operator", "Administrator"},
}


# --- the checks --------------------------------------------------------------------------------------

@dataclass
class Check:
    name: str  # "GET change", "action resubmit", "core_store_run pull"
    expect: Callable[[Model], bool]  # allowed, for this object?
    send: Callable[[Client, Model], HttpResponse]
    allowed: Callable[[HttpResponse], bool]  # did the request get through?
    reads: bool = False  # a read: Viewers may do it
    refused_statuses: tuple[int, ...] = (403,)


def _request(user: User) -> object:
    request = RequestFactory().get("/")
    request.user = user
    return request


def _url(model_admin: admin.ModelAdmin, view: str, *args: object) -> str:
    opts = model_admin.model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def _custom_url_names(model_admin: admin.ModelAdmin) -> list[str]:
    opts = model_admin.model._meta
    defaults = {f"{opts.app_label}_{opts.model_name}_{view}" for view in DEFAULT_URLS}
    return [pattern.name for pattern in model_admin.get_urls() if pattern.name and pattern.name not in defaults]


def _status(code: int) -> Callable[[HttpResponse], bool]:
    return lambda response: response.status_code == code


def checks_for(model_admin: admin.ModelAdmin, user: User) -> list[Check]:
    """Every request to make as `user`, each with what the admin says should happen to it."""
    request = _request(user)
    page, ma = _status(200), model_admin
    checks = [
        Check("GET changelist", lambda o: ma.has_view_or_change_permission(request),
              lambda c, o: c.get(_url(ma, "changelist")), page, reads=True),
        Check("GET change", lambda o: ma.has_view_or_change_permission(request, o),
              lambda c, o: c.get(_url(ma, "change", o.pk)), page, reads=True),
        Check("GET history", lambda o: ma.has_view_or_change_permission(request, o),
              lambda c, o: c.get(_url(ma, "history", o.pk)), page, reads=True),
        Check("GET add", lambda o: ma.has_add_permission(request), lambda c, o: c.get(_url(ma, "add")), page),
        Check("GET delete", lambda o: ma.has_delete_permission(request, o),
              lambda c, o: c.get(_url(ma, "delete", o.pk)), page),
    ]
    # Writes are only sent where they should be refused: the refusal must hold and change nothing.
    if not ma.has_add_permission(request):
        checks.append(Check("POST add", lambda o: False, lambda c, o: c.post(_url(ma, "add"), {}), page))
    if not ma.has_change_permission(request):
        checks.append(Check("POST change", lambda o: False, lambda c, o: c.post(_url(ma, "change", o.pk), {}), page))
    if not ma.has_delete_permission(request):
        checks.append(Check("POST delete", lambda o: False,
                            lambda c, o: c.post(_url(ma, "delete", o.pk), {"post": "yes"}), _status(302)))
    # Every action, offered to this user or not: its name is posted as a forged form would.
    for func, name, _ in ma._get_base_actions():
        needs = getattr(func, "allowed_permissions", ())
        may = ma.has_view_or_change_permission(request) and all(
            getattr(ma, f"has_{p}_permission")(request) for p in needs)
        checks.append(Check(f"action {name}", lambda o, may=may: may, lambda c, o, name=name: c.post(
            _url(ma, "changelist"), {"action": name, "_selected_action": [str(o.pk)], "index": "0"}),
            action_ran, refused_statuses=(200, 302, 403)))
    for url_name in _custom_url_names(ma):
        for variant, view in CUSTOM_VIEWS.get(url_name, {}).items():
            checks.append(Check(
                f"{url_name} {variant}", lambda o, view=view: view.may(user, ma, o),
                lambda c, o, url_name=url_name, view=view: getattr(c, view.method)(
                    reverse(f"admin:{url_name}", args=view.args(o)), view.data),
                _status(view.allowed_status), reads=view.reads, refused_statuses=(403, 405)))
    return checks


def database_state() -> dict[str, str]:
    """Every row of every table but sessions, by table: a refused request must leave all of it as it was."""
    return {model._meta.label: repr(list(model._base_manager.order_by("pk").values()))
            for model in apps.get_models() if not model._meta.proxy and model._meta.label != "sessions.Session"}


# --- the tests ---------------------------------------------------------------------------------------

def test_every_registered_admin_has_an_object_factory_and_every_custom_view_an_expectation():
    missing = [label for label in REGISTRY if label not in FACTORIES]
    unexplained = [name for model_admin in REGISTRY.values() for name in _custom_url_names(model_admin)
                   if name not in CUSTOM_VIEWS]
    assert (missing, unexplained) == ([], []), "add them to FACTORIES / CUSTOM_VIEWS"


def test_every_admin_action_declares_the_permission_it_needs():
    undeclared = [f"{label}: {name}" for label, model_admin in REGISTRY.items()
                  for func, name, _ in model_admin._get_base_actions() if not getattr(func, "allowed_permissions", ())]
    assert undeclared == []


@pytest.mark.usefixtures("jobs_queued")
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("label", sorted(REGISTRY))
def test_each_group_gets_exactly_what_it_may(label, group, staff_member, django_capture_on_commit_callbacks):
    model_admin, user = REGISTRY[label], staff_member(group)
    checks = checks_for(model_admin, user)
    # A pin whose page or action no longer exists would hold nothing (writes are only sent when refused).
    problems = [f"{name}: pinned, but there is no such page or action" for pinned_label, name in PINNED
                if pinned_label == label and not name.startswith("POST ") and name not in {c.name for c in checks}]
    for check in checks:
        obj = FACTORIES[label]()
        client = Client()  # a fresh one each time: no message left from the previous request
        client.force_login(user)
        expected = check.expect(obj) and (check.reads or group != "Viewer")  # Viewers only read
        expected = group in PINNED[(label, check.name)] if (label, check.name) in PINNED else expected
        before = database_state()
        with django_capture_on_commit_callbacks(execute=True):  # work queued on commit is part of the request
            response = check.send(client, obj)
        got = check.allowed(response)
        if got != expected:
            problems.append(f"{check.name}: expected {'allowed' if expected else 'refused'}, "
                            f"got {response.status_code} ({'allowed' if got else 'refused'})")
        elif not expected and response.status_code not in check.refused_statuses:
            problems.append(f"{check.name}: refused with {response.status_code}")
        if not expected and (after := database_state()) != before:
            changed = sorted(table for table in after if after[table] != before[table])
            problems.append(f"{check.name}: refused, but changed {', '.join(changed)}")
    assert problems == [], f"{group} on {label}:\n" + "\n".join(problems)


# --- the two reported incidents, spelled out ---------------------------------------------------------

@pytest.mark.usefixtures("jobs_queued")
def test_a_viewer_cannot_resubmit_a_failed_resend_order(staff_member):
    order = _order()
    failure = _task(success=False, func="orders.tasks.resend_order")
    failure.args = (order.pk, "otto-operator")
    failure.save()
    client = Client()
    client.force_login(staff_member("Viewer"))
    before = database_state()

    response = client.post(_url(REGISTRY["django_q.failure"], "changelist"),
                           {"action": "resubmit", "_selected_action": [failure.pk], "index": "0"})

    assert not action_ran(response)
    assert OrmQ.objects.count() == 0 and database_state() == before


def test_an_administrator_cannot_add_an_os_system_schedule(staff_member):
    client = Client()
    client.force_login(staff_member("Administrator"))

    response = client.post(_url(REGISTRY["django_q.schedule"], "add"),
                           {"name": "pwn", "func": "os.system", "args": "'id'", "schedule_type": "O", "repeats": "-1",
                            "next_run_0": "2026-01-01", "next_run_1": "00:00:00"})

    assert response.status_code == 403
    assert not Schedule.objects.filter(func="os.system").exists()
