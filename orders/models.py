"""ERP sync state per order, the log of every step tried for it (the timeline), and alerts with their channels."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.db import models
from django.db.models import Q

from core.models import Store
from integrationhub.crypto import EncryptedTextField


class OrderSync(models.Model):
    """Where one VTEX order stands on its way into the ERP.

    new -> sent_to_erp -> handling_started is the happy path. `canceled`, `needs_attention` and
    `resolved` stop it. `cancel_pending` says a cancel notice is owed to an ERP that has the order.
    """

    class State(models.TextChoices):
        NEW = "new", "New"
        SENT_TO_ERP = "sent_to_erp", "Sent to ERP"
        HANDLING_STARTED = "handling_started", "Handling started"
        CANCELED = "canceled", "Canceled"
        NEEDS_ATTENTION = "needs_attention", "Needs attention"
        RESOLVED = "resolved", "Resolved by staff"

    class ErrorKind(models.TextChoices):
        """Why the last attempt did not go through: what the dashboard, the alerts and the filters group by."""

        VTEX_UNAVAILABLE = "vtex_unavailable", "VTEX unavailable"
        VTEX_RATE_LIMITED = "vtex_rate_limited", "VTEX rate limit"
        VTEX_REFUSED = "vtex_refused", "VTEX refused"
        NOT_READY = "not_ready", "Not ready for handling yet"
        HANDLED_ELSEWHERE = "handled_elsewhere", "Handled outside the hub"
        UNEXPECTED_STATUS = "unexpected_status", "Unexpected VTEX status"
        ERP_UNAVAILABLE = "erp_unavailable", "ERP unavailable"
        ERP_REFUSED = "erp_refused", "ERP refused"
        INTERNAL_ERROR = "internal_error", "Internal error"

    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="orders")
    order_id = models.CharField(max_length=100)
    state = models.CharField(max_length=20, choices=State.choices, default=State.NEW)
    vtex_status = models.CharField(max_length=60, blank=True, help_text="Last status VTEX reported")
    cancel_pending = models.BooleanField(default=False)
    # ERP requests wait to be sent to VTEX: the dispatcher comes back for them.
    vtex_pending = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0, help_text="Failed tries of the current step")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    error_kind = models.CharField(max_length=30, choices=ErrorKind.choices, blank=True)
    erp_reference = models.CharField(max_length=200, blank=True)
    erp_accepted_at = models.DateTimeField(null=True, blank=True)
    erp_cancel_sent_at = models.DateTimeField(null=True, blank=True)
    handling_started_at = models.DateTimeField(null=True, blank=True)
    order_snapshot = models.JSONField(null=True, blank=True)
    sequence = models.CharField(max_length=40, blank=True)
    customer_email = models.CharField(max_length=254, blank=True)
    first_event_at = models.DateTimeField(null=True, blank=True, help_text="When VTEX says the first event happened")
    claim_token = models.CharField(max_length=40, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Which process holds the claim ("host:pid:pid-namespace", as core.leases writes lease holders), so a
    # claim of a process that died on this host is freed at once instead of after HUB_CLAIM_SECONDS.
    claimed_by = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "order"
        permissions = [
            ("operate_orders", "Can retry, resend, start handling and resolve orders"),
            ("view_personal_data", "Can see customers' personal data unmasked"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["store", "order_id"], name="order_sync_unique_order"),
        ]
        indexes = [
            models.Index(fields=["claimed_by"], name="order_sync_claimed_by", condition=~Q(claimed_by="")),
            # The dispatcher's query: due work, oldest first.
            models.Index(
                fields=["next_attempt_at"],
                name="order_sync_due",
                condition=Q(next_attempt_at__isnull=False),
            ),
            models.Index(fields=["state", "created_at"], name="order_sync_state_created"),
            models.Index(fields=["store", "state"], name="order_sync_store_state"),
            models.Index(fields=["sequence"], name="order_sync_sequence"),
            models.Index(fields=["customer_email"], name="order_sync_email"),
            models.Index(fields=["created_at"], name="order_sync_created"),
        ]

    def __str__(self) -> str:
        return self.order_id

    @property
    def erp_has_order(self) -> bool:
        return self.erp_accepted_at is not None


class SyncAttempt(models.Model):
    """One step tried for an order: the order's timeline as staff read it."""

    class Step(models.TextChoices):
        EVENT = "event", "Event received"
        GET_ORDER = "get_order", "Get order from VTEX"
        ERP_SEND = "erp_send", "Send to ERP"
        START_HANDLING = "start_handling", "Start handling"
        ERP_CANCEL = "erp_cancel", "Cancel notice to ERP"
        VTEX_INVOICE = "vtex_invoice", "Invoice to VTEX"
        VTEX_TRACKING = "vtex_tracking", "Tracking to VTEX"
        VTEX_CANCEL = "vtex_cancel", "Cancel on VTEX"
        STAFF = "staff", "Staff action"

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        RETRY = "retry", "Will retry"
        FAILED = "failed", "Failed"
        INFO = "info", "Info"

    order = models.ForeignKey(OrderSync, on_delete=models.CASCADE, related_name="attempts_log")
    step = models.CharField(max_length=20, choices=Step.choices)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)
    request_excerpt = models.TextField(blank=True)
    triggered_by = models.CharField(max_length=150, default="schedule")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["order", "created_at"], name="sync_attempt_order_time"),
            models.Index(fields=["created_at"], name="sync_attempt_time"),  # dashboard: last 24 h
        ]

    def __str__(self) -> str:
        return f"{self.get_step_display()}: {self.get_outcome_display()}"


class ErpRequest(models.Model):
    """A request from the ERP to be carried to VTEX (invoice, tracking, cancel): the hub's record of it."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        TRACKING = "tracking", "Tracking"
        CANCEL = "cancel", "Cancel"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # stored, not yet accepted by VTEX
        SENT = "sent", "Sent"  # VTEX accepted it; its receipt is kept
        REFUSED = "refused", "Refused by VTEX"  # a 4xx: VTEX refused it for good
        FAILED = "failed", "Failed"  # gave up after HUB_MAX_ATTEMPTS transient failures: needs attention
        CONFIRMED = "confirmed", "Confirmed"  # the feed's invoiced/canceled event arrived

    order = models.ForeignKey(OrderSync, on_delete=models.CASCADE, related_name="erp_requests")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    # The request's Idempotency-Key header, or one derived from its content (orders/services/erp_requests.py).
    idempotency_key = models.CharField(max_length=200)
    # The body exactly as VTEX will receive it: VTEX's field names, amounts in cents as VTEX types them.
    payload = models.JSONField()
    invoice_number = models.CharField(max_length=100, blank=True)
    invoice_type = models.CharField(max_length=10, blank=True)  # "Output" (sale) or "Input" (return)
    invoice_value = models.BigIntegerField(null=True, blank=True)  # cents
    reason = models.TextField(blank=True)  # cancel
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    receipt = models.CharField(max_length=100, blank=True)
    vtex_answer = models.TextField(blank=True)  # an excerpt
    sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    requested_by = models.CharField(max_length=150, default="erp")  # or a staff username

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "kind", "idempotency_key"], name="erp_request_unique"),
        ]
        indexes = [models.Index(fields=["state", "created_at"], name="erp_request_state_created")]

    def __str__(self) -> str:
        what = f" {self.invoice_number}" if self.invoice_number else ""
        return f"{self.get_kind_display()}{what} of {self.order}"


class AlertChannel(models.Model):
    """Where alerts go: an e-mail address or a webhook (JSON POST, Slack-compatible), for one store or all."""

    class Kind(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    store = models.ForeignKey(Store, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_channels",
                              help_text="Empty: alerts of every store")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # A webhook URL often carries its credential in the path (Slack, Teams): encrypted, and shown as its host only.
    target = EncryptedTextField(help_text="An e-mail address, or the webhook's URL")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["store__name", "kind", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.target_shown}"

    @property
    def target_shown(self) -> str:
        """The address for e-mail; the host alone for a webhook (its path and query may hold a secret)."""
        if self.kind == self.Kind.EMAIL:
            return self.target
        return urlsplit(self.target or "").hostname or "?"


class Alert(models.Model):
    """One incident of one health signal of one store, from its first message to its "resolved" (the history)."""

    class Kind(models.TextChoices):
        RETENTION = "retention", "Feed events near VTEX's retention"
        JOBS = "jobs", "Jobs late, down or blocked"
        NEEDS_ATTENTION = "needs_attention", "Needs-attention orders growing"
        ERP_FAILING = "erp_failing", "ERP failing"

    class Severity(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class State(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    message = models.TextField(help_text="The hub's own words: never an ERP or VTEX answer")
    state = models.CharField(max_length=10, choices=State.choices, default=State.FIRING)
    first_at = models.DateTimeField()
    last_sent_at = models.DateTimeField(null=True, blank=True, help_text="Last message delivered to a channel")
    resolved_at = models.DateTimeField(null=True, blank=True)
    deliveries = models.PositiveIntegerField(default=0, help_text="Messages delivered, over every channel")
    last_delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-first_at", "-pk"]
        constraints = [
            # One open incident per store and signal: two evaluations at once cannot both open one.
            models.UniqueConstraint(fields=["store", "kind"], condition=Q(state="firing"), name="alert_one_firing"),
        ]
        indexes = [models.Index(fields=["state"], name="alert_state")]

    def __str__(self) -> str:
        return f"{self.store}: {self.get_kind_display()} ({self.get_state_display()})"
