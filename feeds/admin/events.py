"""The event inbox, read-only: every feed item and hook call as received."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html
from integrationhub.admin_base import ReadOnlyAdmin
from integrationhub.personal_data import PersonalDataAdminMixin, shown

from feeds.models import FeedEvent


@admin.register(FeedEvent)
class FeedEventAdmin(PersonalDataAdminMixin, ReadOnlyAdmin):
    list_display = ["received_at", "store", "order_id", "state", "last_state", "outcome", "source", "committed"]
    list_filter = ["outcome", "source", "store", "state"]
    search_fields = ["order_id", "event_id"]
    list_select_related = ["store"]
    date_hierarchy = "received_at"
    # The payload and the processing error are third-party text: shown through masking methods, never raw.
    # The handle is VTEX's receipt for the commit, of no use to staff.
    fields = ["store", "source", "event_id", "order_id", "domain", "state", "last_state", "last_change",
              "current_change", "outcome", "error_shown", "duplicate_of", "received_at", "committed_at",
              "payload_pretty"]
    readonly_fields = fields

    @admin.display(boolean=True, description="Committed")
    def committed(self, obj: FeedEvent) -> bool:
        return obj.committed_at is not None

    @admin.display(description="Error")
    def error_shown(self, obj: FeedEvent) -> str:
        return shown(obj, obj.error)

    @admin.display(description="Payload")
    def payload_pretty(self, obj: FeedEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(shown(obj, obj.payload), indent=2, ensure_ascii=False))
