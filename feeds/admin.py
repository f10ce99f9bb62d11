"""Admin for stores (secrets are write-only), feed configuration and the event inbox (read-only)."""

from __future__ import annotations

import difflib
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from feeds.feed_config import (
    OMS_STATUS_NAMES, OMS_STATUSES, RETENTION_MAX, RETENTION_MIN, VISIBILITY_MAX, VISIBILITY_MIN, feed_config_load,
    feed_config_push, jsonata_check, jsonata_test,
)
from feeds.jobs import RUNNABLE, store_run_now
from feeds.models import ErpConnection, FeedConfig, FeedEvent, Store
from feeds.stores import parse_header
from integrationhub.admin_base import ReadOnlyAdmin
from orders.models import OrderSync
from orders.personal_data import mask_personal_data

# Django 5.2 warns that URLField's default scheme becomes https in 6.0: choose it now, for the forms
# built when this module is imported (Meta.formfield_callback) and for the ones the admin builds.
URL_FIELDS = {models.URLField: {"assume_scheme": "https"}}


def https_formfield(field: models.Field, **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class StoreForm(forms.ModelForm):
    """The app token is never rendered back: leave the field empty to keep the stored one."""

    app_token = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current token.",
    )

    class Meta:
        model = Store
        fields = ["name", "account", "environment", "base_url", "app_key", "app_token", "enabled"]
        formfield_callback = https_formfield

    def clean_app_token(self) -> str:
        token = self.cleaned_data.get("app_token", "")
        if not token and not (self.instance and self.instance.pk and self.instance.app_token):
            raise forms.ValidationError("An app token is required for a new store.")
        return token or self.instance.app_token


class ErpConnectionForm(forms.ModelForm):
    """Headers may carry credentials: only their names are shown; new headers replace all of them."""

    new_headers = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Write-only. One 'Name: value' per line replaces all headers; leave empty to keep them.",
    )

    class Meta:
        model = ErpConnection
        fields = ["url", "timeout_seconds", "connector"]
        formfield_callback = https_formfield

    def clean_new_headers(self) -> dict[str, str] | None:
        text = self.cleaned_data.get("new_headers", "")
        if not text.strip():
            return None
        return dict(parse_header(line) for line in text.splitlines() if line.strip())

    def save(self, commit: bool = True) -> ErpConnection:
        headers = self.cleaned_data.get("new_headers")
        if headers is not None:
            self.instance.headers = headers
        return super().save(commit=commit)


class ErpConnectionInline(admin.StackedInline):
    model = ErpConnection
    form = ErpConnectionForm
    can_delete = False
    formfield_overrides = URL_FIELDS
    readonly_fields = ["header_names"]
    fields = ["url", "timeout_seconds", "connector", "header_names", "new_headers"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if self.has_change_permission(request, obj):
            return self.fields
        return [name for name in self.fields if name != "new_headers"]  # a form-only field: nothing to show

    @admin.display(description="Headers set")
    def header_names(self, obj: ErpConnection) -> str:
        return ", ".join(sorted(obj.headers or {})) or "none"


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    form = StoreForm
    inlines = [ErpConnectionInline]
    formfield_overrides = URL_FIELDS
    list_display = ["name", "account", "enabled", "feed_status", "last_pull_at", "last_dispatch_at", "vtex_url"]
    list_filter = ["enabled", "feed_status"]
    search_fields = ["name", "account"]
    readonly_fields = ["app_token_set", "feed_status", "feed_error", "last_pull_at", "last_dispatch_at",
                       "vtex_paused_until", "created_at", "updated_at"]

    def get_fields(self, request: HttpRequest, obj: Store | None = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            # A read-only page prints model values as they are: the token must not be one of them.
            fields.remove("app_token")
        return fields

    @admin.display(description="VTEX")
    def vtex_url(self, obj: Store) -> str:
        return obj.vtex_base_url

    @admin.display(description="App token", boolean=True)
    def app_token_set(self, obj: Store) -> bool:
        return bool(obj.app_token)

    def get_urls(self) -> list:
        run = self.admin_site.admin_view(self.run_view)
        return [path("<int:store_id>/run/<str:kind>/", run, name="feeds_store_run"), *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        store = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if store is not None:
            context["feed_config_url"] = _feed_config_url(request, store)
            if request.user.has_perm("feeds.run_jobs"):
                context["run_urls"] = [(kind.capitalize(), reverse("admin:feeds_store_run", args=[store.pk, kind]))
                                       for kind in RUNNABLE]
        return super().change_view(request, object_id, form_url, extra_context=context)

    def run_view(self, request: HttpRequest, store_id: int, kind: str) -> HttpResponse:
        """Staff's "run now": queue a pull or dispatch of one store (POST only, feeds.run_jobs)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("feeds.run_jobs"):
            raise PermissionDenied
        if kind not in RUNNABLE:
            raise Http404(f"unknown job {kind!r}")
        store = get_object_or_404(Store, pk=store_id)
        store_run_now(store=store, kind=kind, by=request.user.get_username())
        messages.success(request, f"{kind.capitalize()} of {store} queued.")
        if not store.enabled:
            messages.warning(request, f"{store} is disabled: the jobs skip disabled stores.")
        next_url = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
            next_url = reverse("admin:feeds_store_change", args=[store.pk])
        return HttpResponseRedirect(next_url)


def _feed_config_url(request: HttpRequest, store: Store) -> str:
    config = FeedConfig.objects.filter(store=store).only("pk").first()
    if config is not None and request.user.has_perm("feeds.view_feedconfig"):
        return reverse("admin:feeds_feedconfig_change", args=[config.pk])
    if config is None and request.user.has_perm("feeds.add_feedconfig"):
        return reverse("admin:feeds_feedconfig_add") + f"?store={store.pk}"
    return ""


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
    expression = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))
    order_id = forms.CharField(max_length=100, label="Order id",
                               widget=forms.TextInput(attrs={"list": "stored-orders", "size": 30}))

    def clean_expression(self) -> str:
        expression = self.cleaned_data["expression"]
        if error := jsonata_check(expression):
            raise ValidationError(error)
        return expression


def _document_for(request: HttpRequest, order: OrderSync) -> dict:
    # Masked for staff who may not see personal data, or true/false answers would reveal it bit by bit.
    if request.user.has_perm("orders.view_personal_data"):
        return order.order_snapshot
    return mask_personal_data(order.order_snapshot)


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


@admin.register(FeedConfig)
class FeedConfigAdmin(admin.ModelAdmin):
    form = FeedConfigForm
    list_display = ["store", "filter_type", "visibility_timeout_seconds", "retention_seconds", "pushed_at",
                    "answer"]
    list_filter = ["filter_type"]
    search_fields = ["store__name", "store__account"]
    list_select_related = ["store"]
    readonly_fields = ["pushed_at", "vtex_answer", "vtex_quantity", "vtex_oldest_age_seconds", "vtex_checked_at"]
    fieldsets = [
        (None, {"fields": ["store"]}),
        ("Filter", {"fields": ["filter_type", "statuses", "expression", "disable_single_fire"]}),
        ("Queue", {"fields": ["visibility_timeout_seconds", "retention_seconds"]}),
        ("VTEX", {"fields": ["pushed_at", "vtex_answer", "vtex_quantity", "vtex_oldest_age_seconds",
                             "vtex_checked_at"]}),
    ]

    @admin.display(description="VTEX's answer")
    def answer(self, obj: FeedConfig) -> str:
        return (obj.vtex_answer[:80] + "…") if len(obj.vtex_answer) > 80 else obj.vtex_answer

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
        result = feed_config_push(config=config, by=by)
        if result.ok:
            messages.success(request, f"Pushed to VTEX. {result.message}")
        else:
            messages.error(request, f"Saved in the hub, but VTEX did NOT take this configuration "
                                    f"(it keeps its previous one). {result.message}")

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/load-from-vtex/", wrap(self.load_view), name="feeds_feedconfig_load"),
            path("<path:object_id>/test-expression/", wrap(self.test_expression_view),
                 name="feeds_feedconfig_test_expression"),
            *super().get_urls(),
        ]

    def _viewable(self, request: HttpRequest, object_id: str) -> FeedConfig:
        config = self.get_object(request, unquote(object_id))
        if config is None:
            raise Http404("no such feed configuration")
        if not self.has_view_permission(request, config):
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
        rows = [{"field": item.field, "label": item.label, "hub": _shown(item.hub), "vtex": _shown(item.vtex),
                 "drifted": item.drifted} for item in result.fields]
        return self._render(request, "load_from_vtex.html", config, title=f"{config}: VTEX and the hub",
                            result=result, rows=rows,
                            raw=json.dumps(result.raw, indent=2, ensure_ascii=False) if result.raw else "")

    def test_expression_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        """Evaluate an expression on a stored order document (GET form: nothing is saved)."""
        config = self._viewable(request, object_id)
        if not request.user.has_perm("orders.view_ordersync"):
            raise PermissionDenied
        orders = OrderSync.objects.filter(store=config.store, order_snapshot__isnull=False)
        result = None
        if "order_id" in request.GET:
            form = ExpressionTestForm(request.GET)
            if form.is_valid():
                order = orders.filter(order_id=form.cleaned_data["order_id"].strip()).first()
                if order is None:
                    form.add_error("order_id", f"No stored order document with this id for {config.store}.")
                else:
                    result = jsonata_test(form.cleaned_data["expression"], _document_for(request, order))
        else:
            form = ExpressionTestForm(initial={"expression": config.expression})
        recent = orders.order_by("-created_at").values_list("order_id", flat=True)[:20]
        return self._render(request, "test_expression.html", config, title=f"{config}: test an expression",
                            form=form, result=result, recent_orders=list(recent),
                            personal_masked=not request.user.has_perm("orders.view_personal_data"))


@admin.register(FeedEvent)
class FeedEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "store", "order_id", "state", "last_state", "outcome", "source", "committed"]
    list_filter = ["outcome", "source", "store", "state"]
    search_fields = ["order_id", "event_id"]
    list_select_related = ["store"]
    date_hierarchy = "received_at"
    exclude = ["payload", "handle"]
    readonly_fields = ["payload_pretty"]

    @admin.display(boolean=True, description="Committed")
    def committed(self, obj: FeedEvent) -> bool:
        return obj.committed_at is not None

    @admin.display(description="Payload")
    def payload_pretty(self, obj: FeedEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))
