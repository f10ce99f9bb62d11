"""The feed filter form, push to VTEX, load and compare, and the expression tester.

In orders, not feeds: the tester runs expressions on the order documents orders stored, and the pages show
VTEX's queue as the dashboard does (orders.dashboard).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from feeds.expressions import CPU_SECONDS, EXPRESSION_MAX_CHARS, VALUE_CHARS, WALL_SECONDS
from feeds.feed_config import (
    OMS_STATUS_NAMES,
    OMS_STATUSES,
    RETENTION_MAX,
    RETENTION_MIN,
    VISIBILITY_MAX,
    VISIBILITY_MIN,
    feed_config_load,
    jsonata_check,
    jsonata_test,
)
from feeds.hook_config import hook_config_delete, hook_config_load, hook_config_push, hook_status
from feeds.models import FeedConfig
from feeds.queue_status import REAPPLIABLE, config_reapply, feed_config_apply, queue_status_record
from integrationhub.personal_data import PersonalDataAdminMixin, for_user, mask_personal_data, shown
from orders.dashboard import QUEUE_EXPLAINED, QUEUE_SOURCE, hook_on_vtex, queue_view, when
from orders.models import OrderSync, SyncAttempt


# Shown on the tester page, so a "too slow" answer is no surprise.
LIMITS = {"cpu_seconds": CPU_SECONDS, "wall_seconds": f"{WALL_SECONDS:g}", "expression_chars": EXPRESSION_MAX_CHARS,
          "value_chars": VALUE_CHARS}


class StatusesField(forms.MultipleChoiceField):
    """Only OMS status names; a misspelling is named, with the status it probably meant."""

    widget = forms.CheckboxSelectMultiple

    def validate(self, value: list[str]) -> None:
        unknown = [name for name in value if name not in OMS_STATUS_NAMES]
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, OMS_STATUS_NAMES, n=2)
                hints.append(f"“{name}”" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
            raise ValidationError(
                "Not an OMS status: %(names)s. VTEX would accept it and the filter would never fire.",
                code="invalid_choice", params={"names": ", ".join(hints)},
            )
        super().validate(value)


class FeedConfigForm(forms.ModelForm):
    filter_type = forms.ChoiceField(
        choices=FeedConfig.FilterType.choices, widget=forms.RadioSelect,
        help_text="FromWorkflow: an event on each change to one of the chosen statuses. "
                  "FromOrders: an event when the order document matches the expression.",
    )
    statuses = StatusesField(
        required=False, choices=[(name, f"{label} ({name})") for name, label in OMS_STATUSES],
        help_text="FromWorkflow only: the statuses that put an order in the feed (at least one).",
    )
    expression = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text='FromOrders only: a JSONata expression on the order document, e.g. '
                  '<code>status = "ready-for-handling" and salesChannel = "2"</code>. Checked before saving.',
    )
    disable_single_fire = forms.BooleanField(
        required=False, label="disableSingleFire",
        help_text="FromOrders only. Off (recommended): an order enters the feed once, the first time it matches. "
                  "On: it enters again on every later change while it still matches, possibly hundreds of times.",
    )
    visibility_timeout_seconds = forms.IntegerField(
        min_value=VISIBILITY_MIN, max_value=VISIBILITY_MAX,
        help_text=f"Seconds an item read by the hub stays hidden before VTEX hands it out again "
                  f"({VISIBILITY_MIN}–{VISIBILITY_MAX}, i.e. up to 12 h). Keep it above the time a batch takes.",
    )
    retention_seconds = forms.IntegerField(
        min_value=RETENTION_MIN, max_value=RETENTION_MAX,
        help_text=f"Seconds VTEX keeps an item nobody committed ({RETENTION_MIN}–{RETENTION_MAX}: 4 to 14 days).",
    )

    class Meta:
        model = FeedConfig
        fields = ["store", "filter_type", "statuses", "expression", "disable_single_fire",
                  "visibility_timeout_seconds", "retention_seconds"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = (self.instance.statuses or []) if self.instance.pk else []
        if dropped := [name for name in stored if name not in OMS_STATUS_NAMES]:
            self.fields["statuses"].help_text += (
                f" Stored but not OMS statuses, dropped when you save: {', '.join(dropped)}.")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = data.get("filter_type")
        # The other type's fields are cleared: VTEX answers 409 when a filter mixes them.
        if kind == FeedConfig.FilterType.FROM_WORKFLOW:
            if not data.get("statuses") and "statuses" not in self.errors:
                self.add_error("statuses", "Choose at least one status for a FromWorkflow filter.")
            data["expression"], data["disable_single_fire"] = "", False
        elif kind == FeedConfig.FilterType.FROM_ORDERS:
            expression = data.get("expression", "")
            if not expression:
                self.add_error("expression", "A FromOrders filter needs an expression.")
            elif error := jsonata_check(expression):
                self.add_error("expression", error)
            data["statuses"] = []
        return data


class ExpressionTestForm(forms.Form):
    # No JSONata check here: the evaluation compiles it in the bounded child and its syntax error comes back
    # on this field, so one POST starts one child process.
    expression = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))
    order_id = forms.CharField(max_length=100, label="Order id",
                               widget=forms.TextInput(attrs={"list": "stored-orders", "size": 30}))


def _document_for(request: HttpRequest, order: OrderSync) -> dict:
    # Masked for staff who may not see personal data, or true/false answers would reveal it bit by bit.
    if request.user.has_perm("orders.view_personal_data"):
        return order.order_snapshot
    return mask_personal_data(order.order_snapshot)


def _document_facts(order: OrderSync) -> dict[str, Any]:
    """Which document the tester read: the one stored at the last Get order, its status then and VTEX's now."""
    fetched_at = (SyncAttempt.objects.filter(order=order, step=SyncAttempt.Step.GET_ORDER,
                                             outcome=SyncAttempt.Outcome.OK)
                  .order_by("-created_at").values_list("created_at", flat=True).first())
    snapshot = order.order_snapshot if isinstance(order.order_snapshot, dict) else {}
    status_then = str(snapshot.get("status") or "")
    return {"order_id": order.order_id, "fetched_at": fetched_at, "status_then": status_then or "unknown",
            "status_now": order.vtex_status or "unknown", "state": order.get_state_display(),
            "changed": bool(order.vtex_status) and order.vtex_status != status_then}


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


@admin.register(FeedConfig)
class FeedConfigAdmin(PersonalDataAdminMixin, admin.ModelAdmin):
    form = FeedConfigForm
    list_display = ["store", "filter_type", "visibility_timeout_seconds", "retention_seconds", "pushed_shown",
                    "answer"]
    list_filter = ["filter_type"]
    search_fields = ["store__name", "store__account"]
    list_select_related = ["store"]
    # VTEX's answer is third-party text (masked by `shown`); the queue figures read as on every other page.
    readonly_fields = ["pushed_shown", "vtex_answer_shown", "vtex_queue", "hook_shown", "vtex_log_shown"]
    fieldsets = [
        (None, {"fields": ["store"]}),
        ("Filter", {"fields": ["filter_type", "statuses", "expression", "disable_single_fire"]}),
        ("Queue", {"fields": ["visibility_timeout_seconds", "retention_seconds"]}),
        ("VTEX", {"fields": ["pushed_shown", "vtex_answer_shown", "vtex_queue", "hook_shown", "vtex_log_shown"]}),
    ]

    @admin.display(description="VTEX's answer")
    def answer(self, obj: FeedConfig) -> str:
        text = self.vtex_answer_shown(obj)
        return (text[:80] + "…") if len(text) > 80 else text

    @admin.display(description="VTEX's answer")
    def vtex_answer_shown(self, obj: FeedConfig) -> str:
        text = shown(obj, obj.vtex_answer)
        return f"REFUSED: {text}" if obj.push_accepted is False else (text or "—")

    @admin.display(description="Pushed to VTEX", ordering="pushed_at")
    def pushed_shown(self, obj: FeedConfig) -> str:
        return when(obj.pushed_at) if obj.pushed_at else "never"

    @admin.display(description="Order hook")
    def hook_shown(self, obj: FeedConfig) -> str:
        if obj.pk is None:
            return "—"
        return format_html('{} <a href="{}">Order hook…</a>', hook_text(obj),
                           reverse("admin:feeds_feedconfig_hook", args=[obj.pk]))

    @admin.display(description="VTEX-side events")
    def vtex_log_shown(self, obj: FeedConfig) -> str:
        # Re-apply lines quote VTEX's answer: third-party text, masked like VTEX's answer above.
        text = shown(obj, obj.vtex_log)
        if not text:
            return "—"
        return format_html('<pre id="hub-vtex-log" style="margin:0;white-space:pre-wrap">{}</pre>', text)

    @admin.display(description=QUEUE_SOURCE)
    def vtex_queue(self, obj: FeedConfig) -> str:
        queue = queue_view(obj)
        # Not class="help": the admin indents that by a label's width inside a read-only cell.
        return format_html('<span id="hub-vtex-queue" title="{}">{}</span><div style="font-size:.75rem;'
                           'color:var(--body-quiet-color);margin-top:4px">{}</div>',
                           when(queue.checked_at), queue.text, QUEUE_EXPLAINED)

    def get_readonly_fields(self, request: HttpRequest, obj: FeedConfig | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return ["store", *fields] if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: FeedConfig, form: forms.Form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        by = request.user.get_username()
        # Push once the hub's copy is committed: no HTTP call while the admin's transaction is open.
        transaction.on_commit(lambda: self._push(request, obj, by))

    @staticmethod
    def _push(request: HttpRequest, config: FeedConfig, by: str) -> None:
        applied = feed_config_apply(config=config, by=by)
        result = applied.feed
        if result.ok:
            messages.success(request, f"Pushed to VTEX. {for_user(request.user, result.message)}")
        else:
            messages.error(request, f"Saved in the hub, but VTEX did NOT take this configuration "
                                    f"(it keeps its previous one). {for_user(request.user, result.message)}")
        if applied.hook is not None:  # the hub keeps a hook with the same filter: pushed along
            text = for_user(request.user, applied.hook.message)
            if applied.hook.ok:
                messages.success(request, f"Order hook pushed with the same filter. {text}")
            else:
                messages.error(request, f"The order hook still has the previous filter: VTEX did NOT take it. {text}")

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/load-from-vtex/", wrap(self.load_view), name="feeds_feedconfig_load"),
            path("<path:object_id>/test-expression/", wrap(self.test_expression_view),
                 name="feeds_feedconfig_test_expression"),
            # Before hook/: a <path:> id would take "12/reapply" and leave "hook/" to that pattern.
            path("<path:object_id>/reapply/<str:what>/", wrap(self.reapply_view), name="feeds_feedconfig_reapply"),
            path("<path:object_id>/hook/", wrap(self.hook_view), name="feeds_feedconfig_hook"),
            path("<path:object_id>/hook/push/", wrap(self.hook_push_view), name="feeds_feedconfig_hook_push"),
            path("<path:object_id>/hook/load/", wrap(self.hook_load_view), name="feeds_feedconfig_hook_load"),
            path("<path:object_id>/hook/delete/", wrap(self.hook_delete_view), name="feeds_feedconfig_hook_delete"),
            *super().get_urls(),
        ]

    def _viewable(self, request: HttpRequest, object_id: str) -> FeedConfig:
        config = self.get_object(request, unquote(object_id))
        if config is None:
            raise Http404("no such feed configuration")
        if not self.has_view_permission(request, config):
            raise PermissionDenied
        return config

    def _changeable(self, request: HttpRequest, object_id: str) -> FeedConfig:
        """For the buttons that call VTEX: feeds.change_feedconfig, checked here whatever the page showed."""
        config = self._viewable(request, object_id)
        if not self.has_change_permission(request, config):
            raise PermissionDenied
        return config

    def _render(self, request: HttpRequest, template: str, config: FeedConfig, **context: Any) -> TemplateResponse:
        return TemplateResponse(request, f"admin/feeds/feedconfig/{template}", {
            **self.admin_site.each_context(request), "opts": self.opts, "original": config,
            "has_view_permission": True, **context,
        })

    def load_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        """VTEX's current configuration next to the hub's, drifted fields highlighted. Saves nothing."""
        config = self._viewable(request, object_id)
        result = feed_config_load(store=config.store)
        if result.ok:
            # VTEX just answered: its figures become the latest check, so every page shows these same ones.
            config = queue_status_record(config=config, quantity=result.quantity,
                                         oldest_age_seconds=result.oldest_age_seconds)
        rows = [{"field": item.field, "label": item.label, "hub": _shown(item.hub), "vtex": _shown(item.vtex),
                 "drifted": item.drifted} for item in result.fields]
        return self._render(request, "load_from_vtex.html", config, title=f"{config}: VTEX and the hub",
                            result=result, rows=rows, queue=queue_view(config), queue_source=QUEUE_SOURCE,
                            queue_explained=QUEUE_EXPLAINED,
                            raw=json.dumps(result.raw, indent=2, ensure_ascii=False) if result.raw else "")

    def may_test_expressions(self, request: HttpRequest, config: FeedConfig | None) -> bool:
        # Each evaluation costs a child process: only for those who may change the filter it serves.
        return self.has_change_permission(request, config) and request.user.has_perm("orders.view_ordersync")

    def test_expression_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        """Evaluate an expression on a stored order document. GET shows the form; only POST evaluates."""
        config = self._viewable(request, object_id)
        if not self.may_test_expressions(request, config):
            raise PermissionDenied
        orders = OrderSync.objects.filter(store=config.store, order_snapshot__isnull=False)
        result, document = None, None
        if request.method == "POST":
            form = ExpressionTestForm(request.POST)
            if form.is_valid():
                order = orders.filter(order_id=form.cleaned_data["order_id"].strip()).first()
                if order is None:
                    form.add_error("order_id", f"No stored order document with this id for {config.store}.")
                else:
                    result = jsonata_test(form.cleaned_data["expression"], _document_for(request, order))
                    if result.invalid:  # the expression's fault, not this order's: show it on the field
                        form.add_error("expression", result.error)
                        result = None
                    else:
                        document = _document_facts(order)
        else:
            form = ExpressionTestForm(initial={"expression": config.expression})
        recent = orders.order_by("-created_at").values_list("order_id", flat=True)[:20]
        return self._render(request, "test_expression.html", config, title=f"{config}: test an expression",
                            form=form, result=result, document=document, recent_orders=list(recent),
                            limits=LIMITS, personal_masked=not request.user.has_perm("orders.view_personal_data"))

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: FeedConfig | None = None) -> TemplateResponse:
        context["may_test_expressions"] = obj is not None and self.may_test_expressions(request, obj)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    # --- the order hook: same filter, its own page ----------------------------------------------------

    def hook_view(self, request: HttpRequest, object_id: str, *, loaded: Any = None) -> TemplateResponse:
        """What the hub would push and what it last saw on VTEX. Calls nothing; the buttons POST."""
        config = self._viewable(request, object_id)
        context: dict[str, Any] = {}
        if loaded is not None:
            # VTEX's copy is third-party data: masked for staff without the personal-data permission.
            context = {"loaded": loaded, "loaded_message": for_user(request.user, loaded.message),
                       "vtex_json": _json(for_user(request.user, loaded.vtex)), "hub_json": _json(loaded.hub),
                       "drift_rows": [{"label": d.label, "hub": _shown(for_user(request.user, d.hub)),
                                       "vtex": _shown(for_user(request.user, d.vtex))} for d in loaded.drift]}
        return self._render(request, "hook.html", config, title=f"{config.store}: order hook",
                            status=hook_status(config=config),
                            may_change=self.has_change_permission(request, config), **context)

    def hook_push_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        config = self._changeable(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        result = hook_config_push(store=config.store, by=request.user.get_username())
        _report(request, result.ok, "Hook pushed to VTEX. " if result.ok else "VTEX did NOT take the hook. ",
                result.message)
        return HttpResponseRedirect(reverse("admin:feeds_feedconfig_hook", args=[config.pk]))

    def hook_load_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        config = self._changeable(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        loaded = hook_config_load(store=config.store)
        return self.hook_view(request, object_id, loaded=loaded)

    def hook_delete_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the confirmation page; POST: delete the hook on VTEX (the feed is left alone)."""
        config = self._changeable(request, object_id)
        if request.method != "POST":
            return self._render(request, "hook_delete.html", config, title=f"{config.store}: delete the order hook?",
                                status=hook_status(config=config))
        result = hook_config_delete(store=config.store, by=request.user.get_username())
        _report(request, result.ok, "" if result.ok else "The hook was NOT deleted. ", result.message)
        return HttpResponseRedirect(reverse("admin:feeds_feedconfig_hook", args=[config.pk]))

    def reapply_view(self, request: HttpRequest, object_id: str, what: str) -> HttpResponse:
        """The dashboard's one-click *Re-apply*: push the hub's copy of the feed or hook configuration again."""
        config = self._changeable(request, object_id)
        if what not in REAPPLIABLE:
            raise Http404("nothing of that name to re-apply")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        result = config_reapply(store=config.store, what=what, by=request.user.get_username())
        _report(request, result.ok, f"{what.capitalize()} of {config.store} re-applied. " if result.ok
                else f"VTEX did NOT take the {what} of {config.store}. ", result.message)
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
            back = reverse("admin:index")
        return HttpResponseRedirect(back)


def _report(request: HttpRequest, ok: bool, lead: str, message: str) -> None:
    """VTEX's answer as a message, masked for staff without the personal-data permission."""
    (messages.success if ok else messages.error)(request, lead + for_user(request.user, message))


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) if value is not None else ""


def hook_text(config: FeedConfig) -> str:
    """The hook in a few words, in the dashboard's terms (orders.dashboard.hook_on_vtex)."""
    return {"present": f"on VTEX (checked {when(config.hook_checked_at)})",
            "missing": f"missing on VTEX (checked {when(config.hook_checked_at)})",
            "unchecked": f"pushed {when(config.hook_pushed_at)}, not checked since",
            "unused": "not used (never pushed by the hub)"}[hook_on_vtex(config)]
