"""Store connections, their feed configuration, and the inbox of every event VTEX sent us."""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxLengthValidator
from django.db import models
from django.db.models import Q

from integrationhub.crypto import EncryptedJSONField, EncryptedTextField

APP_TOKEN_MAX_LENGTH = 500
HOOK_SECRET_MAX_LENGTH = 500


class OptionalEncryptedTextField(EncryptedTextField):
    """An encrypted secret that may be unset: "" is stored as "" (not as ciphertext of nothing).

    So check_secrets and rotate_secrets can skip unset values without a key, and counting them stays honest.
    """

    def get_prep_value(self, value: Any) -> Any:
        if value == "":
            return ""
        return super().get_prep_value(value)


class Store(models.Model):
    """One VTEX account (one appKey, so one feed) and the ERP its orders go to."""

    class FeedStatus(models.TextChoices):
        UNKNOWN = "unknown", "Not read yet"
        OK = "ok", "OK"
        NOT_CONFIGURED = "not_configured", "Feed not configured on VTEX"
        UNAUTHORIZED = "unauthorized", "Credentials refused"
        FAILING = "failing", "Failing"

    name = models.SlugField(max_length=64, unique=True)
    account = models.CharField(max_length=100, help_text="VTEX account name, as in {account}.{environment}.com.br")
    environment = models.CharField(max_length=100, default="vtexcommercestable")
    base_url = models.URLField(blank=True, help_text="Overrides https://{account}.{environment}.com.br (sandbox, tests)")
    app_key = models.CharField(max_length=200)
    # Secret: encrypted at rest, never printed, logged or rendered back. The limit is on the plaintext.
    app_token = EncryptedTextField(validators=[MaxLengthValidator(APP_TOKEN_MAX_LENGTH)])
    # Sent by VTEX in X-Hub-Hook-Token on every hook call (the hub sets it in the hook config): same care.
    hook_secret = OptionalEncryptedTextField(blank=True, default="",
                                             validators=[MaxLengthValidator(HOOK_SECRET_MAX_LENGTH)])
    enabled = models.BooleanField(default=True)
    # The key the ERP presents to /api/erp/<store>/ (orders/services/erp_requests.py), kept as its SHA-256 hex only.
    # A fast hash is right here, unlike for passwords: the key is 32 random bytes, so there is nothing to guess.
    erp_api_key_hash = models.CharField(max_length=64, blank=True)
    erp_api_key_hint = models.CharField(max_length=12, blank=True)  # its first 8 characters, to tell keys apart

    # Health, written by the jobs.
    feed_status = models.CharField(max_length=20, choices=FeedStatus.choices, default=FeedStatus.UNKNOWN)
    feed_error = models.TextField(blank=True)
    last_pull_at = models.DateTimeField(null=True, blank=True, help_text="Last feed read that succeeded")
    last_dispatch_at = models.DateTimeField(null=True, blank=True, help_text="Last dispatch run that finished")
    vtex_paused_until = models.DateTimeField(
        null=True, blank=True, help_text="VTEX answered 429: no call to this account before this time"
    )
    # Not vtex_paused_until: a 404 feed must not stop the account's other calls (orders the hook brings).
    feed_retry_at = models.DateTimeField(
        null=True, blank=True, help_text="The feed answered 404: the polling job reads it again at this time"
    )
    feed_retry_seconds = models.PositiveIntegerField(
        default=0, help_text="The current wait between reads of a 404 feed (doubles up to 10 min; 0: not waiting)"
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("run_jobs", "Can run a store's pull or dispatch now")]

    def __str__(self) -> str:
        return self.name

    @property
    def vtex_base_url(self) -> str:
        return (self.base_url or f"https://{self.account}.{self.environment}.com.br").rstrip("/")


class ErpConnection(models.Model):
    """Where a store's orders are delivered; `connector` is a dotted path to the class that does it."""

    DEFAULT_CONNECTOR = "orders.erp.HttpErpConnector"

    store = models.OneToOneField(Store, on_delete=models.CASCADE, related_name="erp")
    url = models.URLField()
    headers = EncryptedJSONField(default=dict, blank=True)  # may hold credentials: encrypted, never rendered back
    timeout_seconds = models.FloatField(default=20.0)
    connector = models.CharField(max_length=200, default=DEFAULT_CONNECTOR)
    # The circuit breaker (orders/services/erp_breaker.py): failures in a row, and while it is open, until when.
    breaker_failures = models.PositiveIntegerField(default=0)
    breaker_open_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"ERP of {self.store}"


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
    vtex_answer = models.TextField(blank=True)
    # VTEX's own view of the queue, refreshed by a job.
    vtex_quantity = models.IntegerField(null=True, blank=True)
    vtex_oldest_age_seconds = models.FloatField(null=True, blank=True)
    vtex_checked_at = models.DateTimeField(null=True, blank=True)
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


class JobLease(models.Model):
    """A named lease so that one run of a continuous job is active at a time, across processes."""

    name = models.CharField(max_length=50, primary_key=True)
    held_until = models.DateTimeField(null=True, blank=True)
    holder = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return self.name


class CallCount(models.Model):
    """Every VTEX and ERP call any hub process made, by store, operation and answer: /metrics' counters.

    Written only by feeds.call_counts, which adds each process's buffered calls with one upsert every few
    seconds, so all processes and machines sharing the database add up. `le_<ms>` are cumulative histogram
    buckets (calls that took at most that many milliseconds), one per feeds.call_counts.BUCKETS_MS; `count` is
    the +Inf bucket.
    """

    system = models.CharField(max_length=10)  # "vtex" or "erp"
    store = models.CharField(max_length=64)  # the store's name: labels stay bounded (no order ids, no URLs)
    operation = models.CharField(max_length=30)
    status = models.CharField(max_length=10)  # the HTTP status, or "error" when there was no answer
    count = models.BigIntegerField(default=0)
    duration_ms_sum = models.BigIntegerField(default=0)
    le_50ms = models.BigIntegerField(default=0)
    le_100ms = models.BigIntegerField(default=0)
    le_250ms = models.BigIntegerField(default=0)
    le_500ms = models.BigIntegerField(default=0)
    le_1000ms = models.BigIntegerField(default=0)
    le_2500ms = models.BigIntegerField(default=0)
    le_5000ms = models.BigIntegerField(default=0)
    le_10000ms = models.BigIntegerField(default=0)
    le_20000ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The upsert's ON CONFLICT target: one row per label set, whatever process adds to it.
            models.UniqueConstraint(fields=["system", "store", "operation", "status"], name="call_count_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.system} {self.store} {self.operation} {self.status}: {self.count}"


class VtexRateLimit(models.Model):
    """One VTEX account's request budget: a token bucket every process takes from (feeds.rate_limit).

    Soft state rewritten many times a second: on PostgreSQL the table is UNLOGGED (no WAL, no fsync per take),
    so a database crash empties it and each bucket starts again. The 429 pause's record stays Store.vtex_paused_until.
    """

    account_key = models.CharField(max_length=300, primary_key=True)  # feeds.rate_limit.account_key(store)
    tokens = models.FloatField(default=0.0)
    refilled_at = models.DateTimeField(help_text="The tokens were counted up to this time (the database's clock)")
    paused_until = models.DateTimeField(null=True, blank=True, help_text="VTEX answered 429: no call before this")

    def __str__(self) -> str:
        return self.account_key
