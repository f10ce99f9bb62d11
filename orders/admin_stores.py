"""Stores and their ERP connection (secrets are write-only), with staff's *run now*.

In orders, not core: the page shows the store's health (orders.dashboard) and links its feed configuration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme

from core.erp_api_key import erp_api_key_rotate
from core.jobs import RUNNABLE, store_run_now
from core.models import APP_TOKEN_MAX_LENGTH, HOOK_SECRET_MAX_LENGTH, ErpConnection, Store
from core.stores import ERP_CHECKS, STORE_CHECKS, clean_erp_headers, erp_values_clean, parse_header, store_values_clean
from feeds.models import FeedConfig
from integrationhub.personal_data import PersonalDataAdminMixin, shown
from orders.dashboard import Verdict, ago, health_annotate, verdict_of, when

# Django 5.2 warns that URLField's default scheme becomes https in 6.0: choose it now, for the forms
# built when this module is imported (Meta.formfield_callback) and for the ones the admin builds.
URL_FIELDS = {models.URLField: {"assume_scheme": "https"}}


def https_formfield(field: models.Field, **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class StoreForm(forms.ModelForm):
    """The app token and the hook secret are never rendered back: leave a field empty to keep the stored one."""

    app_token = forms.CharField(
        required=False, strip=True, max_length=APP_TOKEN_MAX_LENGTH, widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current token.",
    )
    hook_secret = forms.CharField(
        required=False, strip=True, max_length=HOOK_SECRET_MAX_LENGTH, widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current secret.",
    )

    class Meta:
        model = Store
        fields = ["name", "account", "environment", "base_url", "app_key", "app_token", "hook_secret", "enabled"]
        formfield_callback = https_formfield

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One "App token" row: whether one is set is said here, not by a second read-only row.
        if self.instance.pk and self.instance.app_token:
            help_text = ("A token is set (write-only: it is never shown). "
                         "Leave empty to keep it; type one to replace it.")
        else:
            help_text = "No token is set yet. Write-only: once saved, it is never shown."
        self.fields["app_token"].help_text = help_text
        if self.instance.pk and self.instance.hook_secret:
            self.fields["hook_secret"].help_text = (
                "A secret is set (write-only: it is never shown). VTEX sends it in the X-Hub-Hook-Token header. "
                "Leave empty to keep it; type one to replace it, then push the hook configuration again.")
        else:
            self.fields["hook_secret"].help_text = (
                "No hook secret is set: the hook endpoint refuses every call. Write-only: once saved, it is never "
                "shown (`manage.py connect_store NAME --generate-hook-secret` makes one).")

    def clean_hook_secret(self) -> str:
        # Empty keeps the stored one (or none); a new one is validated in clean() like connect_store's.
        return self.cleaned_data.get("hook_secret", "") or (self.instance.hook_secret if self.instance.pk else "")

    def clean_app_token(self) -> str:
        token = self.cleaned_data.get("app_token", "")
        if not token and not (self.instance and self.instance.pk and self.instance.app_token):
            raise forms.ValidationError("An app token is required for a new store.")
        return token or self.instance.app_token

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        # No hook secret is allowed (the store then uses the feed only): check one only when there is one.
        checks = STORE_CHECKS if cleaned.get("hook_secret") else {
            name: check for name, check in STORE_CHECKS.items() if name != "hook_secret"}
        return _validated(self, cleaned, store_values_clean, checks)


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
        return clean_erp_headers(dict(parse_header(line) for line in text.splitlines() if line.strip()))

    def clean(self) -> dict[str, Any]:
        return _validated(self, super().clean(), erp_values_clean, ERP_CHECKS)

    def save(self, commit: bool = True) -> ErpConnection:
        headers = self.cleaned_data.get("new_headers")
        if headers is not None:
            self.instance.headers = headers
        return super().save(commit=commit)


def _validated(form: forms.ModelForm, cleaned: dict[str, Any], cleaner: Any, checks: dict) -> dict[str, Any]:
    """The same validation as connect_store (core.stores), its errors shown on the fields."""
    values = {name: cleaned[name] for name in checks if name in cleaned and name in form.fields}
    try:
        cleaned.update(cleaner(values))
    except ValidationError as exc:
        form.add_error(None, exc)  # keys are the form's field names
    return cleaned


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
class StoreAdmin(PersonalDataAdminMixin, admin.ModelAdmin):
    form = StoreForm
    inlines = [ErpConnectionInline]
    formfield_overrides = URL_FIELDS
    list_display = ["name", "account", "enabled", "health", "last_pull_ago", "last_dispatch_ago", "vtex_url"]
    list_filter = ["enabled", "feed_status"]
    search_fields = ["name", "account"]
    # Dates through display methods: the hub writes every moment one way (orders.dashboard.when).
    readonly_fields = ["app_token_set", "hook_secret_set", "erp_api_key_shown", "feed_status", "feed_error_shown",
                       "last_pull_shown", "last_dispatch_shown", "paused_until_shown", "created_shown", "updated_shown"]
    # The ERP API key's hash is never shown, nor its hint as an editable field: erp_api_key_shown says what is set.
    exclude = ["feed_error", "last_pull_at", "last_dispatch_at", "vtex_paused_until", "created_at", "updated_at",
               "erp_api_key_hash", "erp_api_key_hint"]

    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        # The verdict's signals (the last ERP exchange) come with the rows: no query per row.
        return health_annotate(super().get_queryset(request), now=timezone.now())

    def get_fields(self, request: HttpRequest, obj: Store | None = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            # A read-only page prints model values as they are: the token must not be one of them.
            # It keeps app_token_set, labelled "App token" too, so either way the page has one such row.
            fields.remove("app_token")
            fields.remove("hook_secret")
        else:
            fields.remove("app_token_set")  # the form field's help text says whether one is set
            fields.remove("hook_secret_set")
        return fields

    @admin.display(description="Health")
    def health(self, obj: Store) -> str:
        verdict = verdict_of(obj, now=timezone.now())
        return format_html('<span class="hub-verdict hub-v-{}" title="{}">{}</span>', verdict.status,
                           _verdict_sentence(obj, verdict), verdict.label)

    @admin.display(description="Last successful pull", ordering="last_pull_at")
    def last_pull_ago(self, obj: Store) -> str:
        return _ago_with_date(obj.last_pull_at)

    @admin.display(description="Last dispatch run", ordering="last_dispatch_at")
    def last_dispatch_ago(self, obj: Store) -> str:
        return _ago_with_date(obj.last_dispatch_at)

    @admin.display(description="Last successful pull", ordering="last_pull_at")
    def last_pull_shown(self, obj: Store) -> str:
        return when(obj.last_pull_at) if obj.last_pull_at else "never"

    @admin.display(description="Last dispatch run", ordering="last_dispatch_at")
    def last_dispatch_shown(self, obj: Store) -> str:
        return when(obj.last_dispatch_at) if obj.last_dispatch_at else "never"

    @admin.display(description="Paused by VTEX until")
    def paused_until_shown(self, obj: Store) -> str:
        return when(obj.vtex_paused_until)

    @admin.display(description="Created")
    def created_shown(self, obj: Store) -> str:
        return when(obj.created_at)

    @admin.display(description="Updated")
    def updated_shown(self, obj: Store) -> str:
        return when(obj.updated_at)

    @admin.display(description="Feed error")
    def feed_error_shown(self, obj: Store) -> str:
        return shown(obj, obj.feed_error)

    @admin.display(description="VTEX")
    def vtex_url(self, obj: Store) -> str:
        return obj.vtex_base_url

    @admin.display(description="App token", boolean=True)
    def app_token_set(self, obj: Store) -> bool:
        return bool(obj.app_token)

    @admin.display(description="Hook secret", boolean=True)
    def hook_secret_set(self, obj: Store) -> bool:
        return bool(obj.hook_secret)

    @admin.display(description="ERP API key")
    def erp_api_key_shown(self, obj: Store) -> str:
        # Its first characters only, to tell keys apart: the key itself was shown once, when it was made.
        if not obj.erp_api_key_hint:
            return "no key yet: the ERP's API (/api/erp/…) refuses every call until one is made"
        return f"{obj.erp_api_key_hint}… (only these first characters are kept in clear)"

    def get_urls(self) -> list:
        run = self.admin_site.admin_view(self.run_view)
        rotate = self.admin_site.admin_view(self.rotate_erp_api_key_view)
        return [path("<int:store_id>/run/<str:kind>/", run, name="core_store_run"),
                path("<int:store_id>/erp-api-key/", rotate, name="core_store_rotate_erp_api_key"),
                *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        store = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if store is not None:
            context["feed_config_url"] = _feed_config_url(request, store)
            # get_object came through get_queryset: the row carries the verdict's signals and the viewer flag.
            context["verdict"] = verdict_of(store, now=timezone.now())
            context["verdict_detail"] = shown(store, context["verdict"].detail)  # VTEX's or the ERP's words
            if request.user.has_perm("core.run_jobs"):
                # The same labels as the dashboard's buttons.
                context["run_urls"] = [(f"{kind.capitalize()} now", reverse("admin:core_store_run",
                                                                            args=[store.pk, kind]))
                                       for kind in RUNNABLE]
            if request.user.has_perm("core.change_store"):
                context["rotate_erp_api_key_url"] = reverse("admin:core_store_rotate_erp_api_key", args=[store.pk])
        return super().change_view(request, object_id, form_url, extra_context=context)

    def rotate_erp_api_key_view(self, request: HttpRequest, store_id: int) -> HttpResponse:
        """GET: the confirmation page; POST: a new ERP API key, shown on the answer once (core.change_store)."""
        if not request.user.has_perm("core.change_store"):
            raise PermissionDenied
        store = get_object_or_404(Store, pk=store_id)
        key = ""
        if request.method == "POST":
            key = erp_api_key_rotate(store)
            self.log_change(request, store, "Rotated the ERP API key.")  # the history says who, never the key
        response = TemplateResponse(request, "admin/core/store/rotate_erp_api_key.html", {
            **self.admin_site.each_context(request), "opts": self.opts, "original": store, "key": key,
            "title": f"{store}: {'new ERP API key' if key else 'rotate the ERP API key?'}",
        })
        add_never_cache_headers(response)  # no copy of the key in a browser's or proxy's cache
        return response

    def run_view(self, request: HttpRequest, store_id: int, kind: str) -> HttpResponse:
        """Staff's "run now": queue a pull or dispatch of one store (POST only, core.run_jobs)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("core.run_jobs"):
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
            next_url = reverse("admin:core_store_change", args=[store.pk])
        return HttpResponseRedirect(next_url)


def _ago_with_date(moment: datetime | None) -> str:
    """A list cell: "3 min ago", the full date as its tooltip (the hub's two ways to write time)."""
    return format_html('<span title="{}" style="white-space:nowrap">{}</span>', when(moment), ago(moment))


def _verdict_sentence(store: Store, verdict: Verdict) -> str:
    """The verdict's cause and, masked for this row's viewer, the words of VTEX or the ERP it quotes."""
    detail = shown(store, verdict.detail)
    return f"{verdict.cause}: {detail}" if detail else verdict.cause


def _feed_config_url(request: HttpRequest, store: Store) -> str:
    config = FeedConfig.objects.filter(store=store).only("pk").first()
    if config is not None and request.user.has_perm("feeds.view_feedconfig"):
        return reverse("admin:feeds_feedconfig_change", args=[config.pk])
    if config is None and request.user.has_perm("feeds.add_feedconfig"):
        return reverse("admin:feeds_feedconfig_add") + f"?store={store.pk}"
    return ""


