"""The event inbox, read-only: every feed item and hook call as received."""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from core.retention import retention_text
from feeds.feed_config import OMS_STATUSES
from feeds.models import FeedEvent
from integrationhub.admin_base import ReadOnlyAdmin
from integrationhub.personal_data import PersonalDataAdminMixin, shown


# A million events is a normal history: every filter and search here is served by an index. Django's own
# date hierarchy and its filter of every distinct state each read the whole table (0.25 s apiece at 1M rows).
class ReceivedFilter(admin.SimpleListFilter):
    title = "received"
    parameter_name = "received"
    SPANS = {"1h": ("Last hour", timedelta(hours=1)), "24h": ("Last 24 hours", timedelta(days=1)),
             "7d": ("Last 7 days", timedelta(days=7)), "30d": ("Last 30 days", timedelta(days=30))}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in self.SPANS.items()] + [("old", "Older than 30 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in self.SPANS:
            return queryset.filter(received_at__gte=timezone.now() - self.SPANS[self.value()][1])
        if self.value() == "old":
            return queryset.filter(received_at__lt=timezone.now() - self.SPANS["30d"][1])
        return queryset


class StateFilter(admin.SimpleListFilter):
    """VTEX's order statuses, from the list the feed filter offers rather than a DISTINCT over every event."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name, _ in OMS_STATUSES]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(state=self.value()) if self.value() else queryset


@admin.register(FeedEvent)
class FeedEventAdmin(PersonalDataAdminMixin, ReadOnlyAdmin):
    list_display = ["received_at", "store", "order_id", "state", "last_state", "outcome", "source", "committed"]
    list_filter = ["outcome", "source", "store", StateFilter, ReceivedFilter]
    # Case-sensitive, so that the indexes serve them (VTEX's ids have no case to ignore).
    search_fields = ["order_id__startswith", "event_id__exact"]
    search_help_text = "Order id (or its start), or an exact event id."
    list_select_related = ["store"]
    show_full_result_count = False  # no second COUNT(*) over every event
    # The payload and the processing error are third-party text: shown through masking methods, never raw.
    # The handle is VTEX's receipt for the commit, of no use to staff.
    fields = ["store", "source", "event_id", "order_id", "domain", "state", "last_state", "last_change",
              "current_change", "outcome", "error_shown", "duplicate_of", "received_at", "committed_at",
              "payload_pretty"]
    readonly_fields = fields

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"retention_line": retention_text(), **(extra_context or {})})

    @admin.display(boolean=True, description="Committed")
    def committed(self, obj: FeedEvent) -> bool:
        return obj.committed_at is not None

    @admin.display(description="Error")
    def error_shown(self, obj: FeedEvent) -> str:
        return shown(obj, obj.error)

    @admin.display(description="Payload")
    def payload_pretty(self, obj: FeedEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(shown(obj, obj.payload), indent=2, ensure_ascii=False))
