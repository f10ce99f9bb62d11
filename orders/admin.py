"""Admin for order sync records and their timeline."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from orders.models import OrderSync, SyncAttempt

STATE_COLORS = {
    "new": "#6c757d", "sent_to_erp": "#0d6efd", "handling_started": "#198754", "canceled": "#495057",
    "needs_attention": "#dc3545", "resolved": "#6f42c1",
}


class SyncAttemptInline(admin.TabularInline):
    model = SyncAttempt
    extra = 0
    can_delete = False
    fields = ["created_at", "step", "outcome", "http_status", "duration_ms", "message", "response_excerpt",
              "triggered_by"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OrderSync)
class OrderSyncAdmin(admin.ModelAdmin):
    list_display = ["order_id", "store", "state_badge", "vtex_status", "erp_reference", "attempts", "short_error",
                    "created_at"]
    list_filter = ["state", "store", "vtex_status", "error_kind"]
    search_fields = ["order_id", "sequence", "customer_email"]
    list_select_related = ["store"]
    inlines = [SyncAttemptInline]
    exclude = ["order_snapshot", "claim_token"]
    readonly_fields = [f.name for f in OrderSync._meta.fields if f.name not in ("order_snapshot", "claim_token")]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Sync state", ordering="state")
    def state_badge(self, obj: OrderSync) -> str:
        return format_html('<span style="background:{};color:#fff;padding:2px 8px;border-radius:8px">{}</span>',
                           STATE_COLORS.get(obj.state, "#6c757d"), obj.get_state_display())

    @admin.display(description="Last error")
    def short_error(self, obj: OrderSync) -> str:
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error
