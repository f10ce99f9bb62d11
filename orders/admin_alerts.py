"""Admin for alerts: the channels (Administrators edit them) and the alert history (read-only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from integrationhub.admin_base import ReadOnlyAdmin
from orders.alerts import alert_channel_target_clean
from orders.dashboard import when
from orders.models import Alert, AlertChannel


class AlertChannelForm(forms.ModelForm):
    """The target is write-only: a webhook URL may carry its credential, so it is never rendered back."""

    target = forms.CharField(
        required=False, strip=True, max_length=2000, widget=forms.PasswordInput(render_value=False),
        help_text="An e-mail address, or the webhook's URL (https; plain http only to 127.0.0.1). Write-only.",
    )

    class Meta:
        model = AlertChannel
        fields = ["store", "kind", "target", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["target"].help_text = (
                f"Now: {self.instance.target_shown}. Leave empty to keep it; type a new one to replace it "
                "(write-only: a webhook URL is never shown in full).")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        target = cleaned.get("target") or (self.instance.target if self.instance.pk else "")
        if not target:
            self.add_error("target", "Give an e-mail address or a webhook URL.")
            return cleaned
        try:
            cleaned["target"] = alert_channel_target_clean(kind=cleaned.get("kind", ""), target=target)
        except ValidationError as exc:
            self.add_error("target", exc)
        return cleaned


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    form = AlertChannelForm
    list_display = ["target_shown", "kind", "store_shown", "enabled"]
    list_filter = ["kind", "enabled", "store"]
    search_fields = ["store__name"]  # the target is encrypted: not searchable
    list_select_related = ["store"]

    @admin.display(description="Target")
    def target_shown(self, obj: AlertChannel) -> str:
        return obj.target_shown

    @admin.display(description="Store", ordering="store__name")
    def store_shown(self, obj: AlertChannel) -> str:
        return obj.store.name if obj.store_id else "every store"

    def get_fields(self, request: HttpRequest, obj: AlertChannel | None = None) -> list[str]:
        return ["store", "kind", "target", "enabled"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """The history of every incident: what fired, for how long, and whether the messages got through."""

    list_display = ["first_shown", "store", "kind", "severity", "state", "message", "deliveries", "last_sent_shown",
                    "resolved_shown"]
    list_filter = ["state", "severity", "kind", "store"]
    search_fields = ["^store__name"]
    list_select_related = ["store"]
    fields = ["store", "kind", "severity", "state", "message", "first_shown", "last_sent_shown", "resolved_shown",
              "deliveries", "last_delivery_error"]
    readonly_fields = fields

    @admin.display(description="First fired", ordering="first_at")
    def first_shown(self, obj: Alert) -> str:
        return when(obj.first_at)

    @admin.display(description="Last message sent", ordering="last_sent_at")
    def last_sent_shown(self, obj: Alert) -> str:
        return when(obj.last_sent_at)

    @admin.display(description="Resolved", ordering="resolved_at")
    def resolved_shown(self, obj: Alert) -> str:
        return when(obj.resolved_at)
