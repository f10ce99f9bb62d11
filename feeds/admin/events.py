"""The event inbox, read-only: every feed item and hook call as received."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html
from integrationhub.admin_base import ReadOnlyAdmin

from feeds.models import FeedEvent


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
