"""Admin for stores (secrets are write-only), feed configuration and the event inbox (read-only)."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from feeds.models import ErpConnection, FeedConfig, FeedEvent, Store
from feeds.stores import parse_header


class StoreForm(forms.ModelForm):
    """The app token is never rendered back: leave the field empty to keep the stored one."""

    app_token = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current token.",
    )

    class Meta:
        model = Store
        fields = ["name", "account", "environment", "base_url", "app_key", "app_token", "enabled"]

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
    readonly_fields = ["header_names"]
    fields = ["url", "timeout_seconds", "connector", "header_names", "new_headers"]

    @admin.display(description="Headers set")
    def header_names(self, obj: ErpConnection) -> str:
        return ", ".join(sorted(obj.headers or {})) or "none"


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    form = StoreForm
    inlines = [ErpConnectionInline]
    list_display = ["name", "account", "enabled", "feed_status", "last_pull_at", "last_dispatch_at", "vtex_url"]
    list_filter = ["enabled", "feed_status"]
    search_fields = ["name", "account"]
    readonly_fields = ["feed_status", "feed_error", "last_pull_at", "last_dispatch_at", "vtex_paused_until",
                       "created_at", "updated_at"]

    @admin.display(description="VTEX")
    def vtex_url(self, obj: Store) -> str:
        return obj.vtex_base_url


@admin.register(FeedConfig)
class FeedConfigAdmin(admin.ModelAdmin):
    list_display = ["store", "filter_type", "visibility_timeout_seconds", "retention_seconds", "pushed_at"]
    list_select_related = ["store"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
