"""The store and its connections, and what every process shares: job leases, call counts, VTEX's request budget."""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxLengthValidator
from django.db import models

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
    # The key the ERP presents to /api/erp/<store>/ (core/erp_api_key.py), kept as its SHA-256 hex only.
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
        # The tables kept their names when the models moved from feeds to core.
        db_table = "feeds_store"
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

    class Meta:
        # The tables kept their names when the models moved from feeds to core.
        db_table = "feeds_erpconnection"

    def __str__(self) -> str:
        return f"ERP of {self.store}"


class JobLease(models.Model):
    """A named lease so that one run of a continuous job is active at a time, across processes."""

    name = models.CharField(max_length=50, primary_key=True)
    held_until = models.DateTimeField(null=True, blank=True)
    holder = models.CharField(max_length=100, blank=True)

    class Meta:
        # The tables kept their names when the models moved from feeds to core.
        db_table = "feeds_joblease"

    def __str__(self) -> str:
        return self.name


class CallCount(models.Model):
    """Every VTEX and ERP call any hub process made, by store, operation and answer: /metrics' counters.

    Written only by core.call_counts, which adds each process's buffered calls with one upsert every few
    seconds, so all processes and machines sharing the database add up. `le_<ms>` are cumulative histogram
    buckets (calls that took at most that many milliseconds), one per core.call_counts.BUCKETS_MS; `count` is
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
        # The tables kept their names when the models moved from feeds to core.
        db_table = "feeds_callcount"
        constraints = [
            # The upsert's ON CONFLICT target: one row per label set, whatever process adds to it.
            models.UniqueConstraint(fields=["system", "store", "operation", "status"], name="call_count_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.system} {self.store} {self.operation} {self.status}: {self.count}"


class VtexRateLimit(models.Model):
    """One VTEX account's request budget: a token bucket every process takes from (core.rate_limit).

    Soft state rewritten many times a second: on PostgreSQL the table is UNLOGGED (no WAL, no fsync per take),
    so a database crash empties it and each bucket starts again. The 429 pause's record stays Store.vtex_paused_until.
    """

    account_key = models.CharField(max_length=300, primary_key=True)  # core.rate_limit.account_key(store)
    tokens = models.FloatField(default=0.0)
    refilled_at = models.DateTimeField(help_text="The tokens were counted up to this time (the database's clock)")
    paused_until = models.DateTimeField(null=True, blank=True, help_text="VTEX answered 429: no call before this")

    class Meta:
        # The tables kept their names when the models moved from feeds to core.
        db_table = "feeds_vtexratelimit"

    def __str__(self) -> str:
        return self.account_key
