"""A store's feed configuration, and the inbox of every event VTEX sent us."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from core.models import Store

# feeds/migrations/0007 names the field here, where it was defined before the store moved to core.
from core.models import OptionalEncryptedTextField  # noqa: F401


class FeedConfig(models.Model):
    """The Orders Feed v3 configuration the hub keeps for a store and can push to VTEX."""

    class FilterType(models.TextChoices):
        FROM_WORKFLOW = "FromWorkflow", "Status changes (FromWorkflow)"
        FROM_ORDERS = "FromOrders", "Order document matches a JSONata expression (FromOrders)"

    store = models.OneToOneField(Store, on_delete=models.CASCADE, related_name="feed_config")
    filter_type = models.CharField(max_length=20, choices=FilterType.choices, default=FilterType.FROM_WORKFLOW)
    statuses = models.JSONField(default=list, blank=True)
    expression = models.TextField(blank=True)
    disable_single_fire = models.BooleanField(default=False)
    visibility_timeout_seconds = models.PositiveIntegerField(default=250)
    retention_seconds = models.PositiveIntegerField(default=345600)
    pushed_at = models.DateTimeField(null=True, blank=True)
    vtex_answer = models.TextField(blank=True)  # VTEX's answer to the last push
    push_accepted = models.BooleanField(null=True, blank=True, help_text="Whether VTEX took the last push (empty: never)")
    # VTEX's own view of the queue, refreshed by a job.
    vtex_quantity = models.IntegerField(null=True, blank=True)
    vtex_oldest_age_seconds = models.FloatField(null=True, blank=True)
    vtex_checked_at = models.DateTimeField(null=True, blank=True)
    queue_check_error = models.TextField(blank=True, help_text="Why the last check of the queue failed (empty: it worked)")
    # The order hook the hub keeps on VTEX (same filter): set by a push, cleared by a delete, checked by a job.
    hook_pushed_at = models.DateTimeField(null=True, blank=True, help_text="Last hook push VTEX accepted")
    hook_present = models.BooleanField(null=True, blank=True, help_text="Whether VTEX still had the hook when checked")
    hook_checked_at = models.DateTimeField(null=True, blank=True)
    # Newest first: VTEX removing the feed or the hook, and each re-apply (ours, with VTEX's answer quoted).
    vtex_log = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"Feed of {self.store}"


class FeedEvent(models.Model):
    """One order event exactly as received (feed item or hook call), stored before its handle is committed."""

    class Source(models.TextChoices):
        FEED = "feed", "Feed"
        HOOK = "hook", "Hook"

    class Outcome(models.TextChoices):
        QUEUED = "queued", "Queued for the ERP flow"
        IGNORED = "ignored", "No action needed"
        DUPLICATE = "duplicate", "Duplicate"
        MALFORMED = "malformed", "Malformed"
        FAILED = "failed", "Processing failed"

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="events")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.FEED)
    event_id = models.CharField(max_length=100, blank=True)
    handle = models.TextField(blank=True)
    order_id = models.CharField(max_length=100, blank=True, db_index=True)
    domain = models.CharField(max_length=50, blank=True)
    state = models.CharField(max_length=60, blank=True)
    last_state = models.CharField(max_length=60, blank=True)
    last_change = models.DateTimeField(null=True, blank=True)
    current_change = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField()
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    error = models.TextField(blank=True)
    duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    committed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            # Only first sightings are unique; repeats are kept as rows that point at them.
            models.UniqueConstraint(
                fields=["store", "event_id"],
                condition=Q(duplicate_of__isnull=True) & ~Q(event_id="") & ~Q(outcome="malformed"),
                name="feed_event_unique_event_id",
            ),
            models.UniqueConstraint(
                fields=["store", "order_id", "state", "current_change"],
                condition=Q(duplicate_of__isnull=True) & Q(current_change__isnull=False) & ~Q(outcome="malformed"),
                name="feed_event_unique_change",
            ),
        ]
        indexes = [
            models.Index(fields=["event_id"], name="feed_event_event_id"),  # the admin's search by event id
            models.Index(fields=["store", "committed_at"], name="feed_event_uncommitted"),
            models.Index(fields=["received_at"], name="feed_event_uncommitted_age",
                         condition=Q(committed_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.order_id or '?'} {self.state or '?'} ({self.get_outcome_display()})"


class HookRejection(models.Model):
    """How many hook calls were refused, per store and reason, for the dashboard. Nothing of the call is kept.

    `store` is empty for calls to a store name the hub does not know: that name is the caller's text.
    """

    class Reason(models.TextChoices):
        METHOD = "method", "Wrong method (405)"
        UNKNOWN_STORE = "unknown_store", "Unknown store (404)"
        DISABLED_STORE = "disabled_store", "Store disabled (404)"
        NO_TOKEN = "no_token", "No hook token (401)"
        WRONG_TOKEN = "wrong_token", "Wrong hook token (401)"
        NO_SECRET = "no_secret", "Store has no hook secret (401)"
        TOO_LARGE = "too_large", "Body too large (413)"
        BAD_JSON = "bad_json", "Malformed JSON (400)"
        BAD_SHAPE = "bad_shape", "Not a VTEX notification (400)"
        WRONG_ORIGIN = "wrong_origin", "Origin is another account or appKey (403)"

    store = models.ForeignKey(Store, null=True, blank=True, on_delete=models.CASCADE, related_name="hook_rejections")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    count = models.PositiveIntegerField(default=0)
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "reason"], name="hook_rejection_unique"),
            # NULLs are distinct in a unique index: the row of unknown stores needs its own.
            models.UniqueConstraint(fields=["reason"], condition=Q(store__isnull=True),
                                    name="hook_rejection_unique_unknown"),
        ]

    def __str__(self) -> str:
        return f"{self.store or 'unknown store'}: {self.get_reason_display()} x{self.count}"
