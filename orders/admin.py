"""Admin for orders: the list, the detail page with its timeline, and the staff actions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.retention import retention_text
from feeds.models import FeedEvent
from integrationhub.admin_base import ReadOnlyAdmin
from integrationhub.personal_data import PersonalDataAdminMixin, can_see_personal_data, for_user, shown
from orders.dashboard import REFRESH_SECONDS, age_text, order_queued_work, when
from orders.models import ErpRequest, OrderSync, SyncAttempt
from orders.services.staff import ACTIONS, CONFIRMED_ACTIONS, ActionRefused, action_check, order_act
from orders.services.vtex_requests import return_path_summary

ERROR_CHARS = 80  # of the last error in the order list; the rest is in the cell's tooltip
STATE_COLORS = {
    "new": "#6c757d", "sent_to_erp": "#0d6efd", "handling_started": "#198754", "canceled": "#495057",
    "needs_attention": "#dc3545", "resolved": "#6f42c1",
}


def state_badge(sync: OrderSync) -> str:
    return format_html('<span class="hub-badge" style="background:{};color:#fff;padding:2px 10px;'
                       'border-radius:10px;font-weight:600;white-space:nowrap">{}</span>',
                       STATE_COLORS.get(sync.state, "#6c757d"), sync.get_state_display())


class CreatedFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("old", "Older than 7 days")]

    def queryset(self, request, queryset):
        now = timezone.now()
        spans = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
        if self.value() in spans:
            return queryset.filter(created_at__gte=now - spans[self.value()])
        if self.value() == "old":
            return queryset.filter(created_at__lt=now - timedelta(days=7))
        return queryset


def _when_field(name: str, label: str):
    """A read-only date field written the hub's one way (orders.dashboard.when)."""
    @admin.display(description=label, ordering=name)
    def show(self, obj) -> str:
        return when(getattr(obj, name))
    show.__name__ = f"{name}_shown"
    return show


class ErpRequestRow:
    """One of the ERP's requests on the order page, with the texts that may quote VTEX masked for the viewer."""

    def __init__(self, request: ErpRequest, error: str, answer: str) -> None:
        self.request, self.error, self.answer = request, error, answer
        payload = request.payload if isinstance(request.payload, dict) else {}
        self.tracking = " ".join(str(payload[k]) for k in ("courier", "trackingNumber") if payload.get(k))


@dataclass(frozen=True)
class TimelineRow:
    """One attempt on the order page, with its texts as the viewer may see them."""

    attempt: SyncAttempt
    message: str
    answer: str


@admin.register(OrderSync)
class OrderSyncAdmin(PersonalDataAdminMixin, admin.ModelAdmin):
    # Short headers and cut errors: the list fits a 1400 px screen next to the filters (order_list CSS in
    # templates/admin/orders/ordersync/change_list.html keeps ids and states on one line).
    list_display = ["order_id", "store", "badge", "vtex_status", "erp_ref", "tries", "short_error", "age"]
    list_filter = ["state", "store", "vtex_status", "error_kind", CreatedFilter]
    # Exact matches use the indexes; an order id may also be searched by its start.
    search_fields = ["^order_id", "=sequence", "=customer_email"]
    search_help_text = "Order id (or its start), sequence number, or the customer's exact email."
    # Searching by e-mail would tell a Viewer which orders a known person placed: only for those who may see it.
    search_fields_without_personal_data = ["^order_id", "=sequence"]
    search_help_text_without_personal_data = "Order id (or its start) or sequence number."
    list_select_related = ["store"]
    list_per_page = 100
    show_full_result_count = False  # no second COUNT(*) over 100k rows
    ordering = ["-pk"]  # newest first; ids grow with time and the primary key index serves the sort
    actions = ["bulk_retry", "bulk_start_handling", "bulk_resend", "bulk_resolve"]
    change_form_template = "admin/orders/ordersync/change_form.html"
    # last_error quotes ERP answers: shown through a display method that masks it.
    # Dates through _when_field: one format on every page.
    fields = ["store", "order_id", "state", "vtex_status", "sequence", "erp_reference", "attempts",
              "next_attempt_at_shown", "last_error_shown", "error_kind", "cancel_pending", "erp_accepted_at_shown",
              "handling_started_at_shown", "erp_cancel_sent_at_shown", "first_event_at_shown", "created_at_shown",
              "updated_at_shown"]
    readonly_fields = fields
    change_list_template = "admin/orders/ordersync/change_list.html"

    next_attempt_at_shown = _when_field("next_attempt_at", "Next attempt at")
    erp_accepted_at_shown = _when_field("erp_accepted_at", "ERP accepted at")
    handling_started_at_shown = _when_field("handling_started_at", "Handling started at")
    erp_cancel_sent_at_shown = _when_field("erp_cancel_sent_at", "ERP cancel sent at")
    first_event_at_shown = _when_field("first_event_at", "First event at")
    created_at_shown = _when_field("created_at", "Created at")
    updated_at_shown = _when_field("updated_at", "Updated at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("order_snapshot")

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        if can_see_personal_data(request.user):
            return list(self.search_fields)
        return list(self.search_fields_without_personal_data)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        # The widest page: without the app sidebar (Home is one click away in the breadcrumbs) its nine
        # columns and the filters fit a 1400 px screen, the last error included.
        return super().changelist_view(request, {"is_nav_sidebar_enabled": False, "retention_line": retention_text(),
                                                  **(extra_context or {})})

    def get_changelist_instance(self, request: HttpRequest):
        changelist = super().get_changelist_instance(request)
        # search_help_text has no per-request hook; the changelist carries it to the template.
        if not can_see_personal_data(request.user):
            changelist.search_help_text = self.search_help_text_without_personal_data
        return changelist

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # every change goes through an action, which checks its own permission

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("orders.operate_orders")

    # --- list columns -------------------------------------------------------------------
    @admin.display(description="Sync state", ordering="state")
    def badge(self, obj: OrderSync) -> str:
        return state_badge(obj)

    @admin.display(description="ERP ref.", ordering="erp_reference")
    def erp_ref(self, obj: OrderSync) -> str:
        return obj.erp_reference

    @admin.display(description="Tries", ordering="attempts")
    def tries(self, obj: OrderSync) -> int:
        return obj.attempts

    @admin.display(description="Last error")
    def short_error(self, obj: OrderSync) -> str:
        text = shown(obj, obj.last_error)  # masked before it is cut, so a cut cannot leave half an e-mail
        if len(text) <= ERROR_CHARS:
            return text
        # The whole (masked) text stays one hover away.
        return format_html('<span title="{}">{}…</span>', text[:1000], text[:ERROR_CHARS])

    @admin.display(description="Last error")
    def last_error_shown(self, obj: OrderSync) -> str:
        return shown(obj, obj.last_error)

    @admin.display(description="Age", ordering="created_at")
    def age(self, obj: OrderSync) -> str:
        return format_html('<span title="{}">{}</span>', when(obj.created_at),
                           age_text((timezone.now() - obj.created_at).total_seconds()))

    # --- detail page ----------------------------------------------------------------------
    def get_urls(self):
        own = [path("<int:pk>/act/<str:action>/", self.admin_site.admin_view(self.act_view),
                    name="orders_ordersync_act")]
        return own + super().get_urls()

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        sync = get_object_or_404(OrderSync.objects.select_related("store", "store__erp"), pk=object_id)
        user = request.user
        document = for_user(user, sync.order_snapshot)
        timeline = list(sync.attempts_log.order_by("created_at", "id"))
        last_erp = next((a for a in reversed(timeline) if a.step in ("erp_send", "erp_cancel")), None)
        events = FeedEvent.objects.filter(store=sync.store, order_id=sync.order_id).order_by("received_at", "id")
        operate = self.has_operate_permission(request)
        context = {
            "sync": sync,
            "sync_error": for_user(user, sync.last_error),
            "state_badge": state_badge(sync),
            "timeline": [TimelineRow(attempt, for_user(user, attempt.message), for_user(user, attempt.response_excerpt))
                         for attempt in timeline],
            "events": [(event, json.dumps(for_user(user, event.payload), indent=2, ensure_ascii=False))
                       for event in events],
            "document_json": json.dumps(document, indent=2, ensure_ascii=False) if document else "",
            "personal_masked": not can_see_personal_data(user),
            "last_erp": last_erp,
            "last_erp_message": for_user(user, last_erp.message) if last_erp else "",
            "last_erp_request": for_user(user, _pretty(last_erp.request_excerpt)) if last_erp else "",
            "last_erp_answer": for_user(user, _pretty(last_erp.response_excerpt)) if last_erp else "",
            "can_operate": operate,
            # A queued action not yet on the timeline: the page says so and reloads itself until it is.
            "queued_work": order_queued_work(timeline),
            "refresh_seconds": REFRESH_SECONDS,
            "order_actions": [(action, action_check(action.name, sync)) for action in ACTIONS.values()]
            if operate else [],
            "return_summary": return_path_summary(sync),
            "erp_requests": [ErpRequestRow(r, for_user(user, r.last_error), for_user(user, r.vtex_answer))
                             for r in sync.erp_requests.order_by("created_at", "id")],
        }
        return super().change_view(request, object_id, form_url, extra_context={**(extra_context or {}), **context})

    def act_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        """One action on one order, from the detail page's buttons (POST, permission checked here)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_operate_permission(request):
            raise PermissionDenied
        if action not in ACTIONS:
            return HttpResponse(f"unknown action {action!r}", status=400)
        sync = get_object_or_404(OrderSync, pk=pk)
        reason = request.POST.get("reason", "")
        if action in CONFIRMED_ACTIONS and request.POST.get("confirm") != "yes":
            return TemplateResponse(request, "admin/orders/ordersync/confirm_one.html", {
                **self.admin_site.each_context(request), "title": f"{ACTIONS[action].label}: confirm",
                "opts": self.model._meta, "sync": sync, "action": ACTIONS[action], "reason": reason,
                "skip": action_check(action, sync)})
        try:
            text = order_act(sync_id=sync.pk, action=action, by=request.user.get_username(), reason=reason)
        except ActionRefused as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            self.message_user(request, text, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:orders_ordersync_change", args=[pk]))

    # --- bulk actions, each behind a confirmation page -------------------------------------
    def _bulk(self, request: HttpRequest, queryset: QuerySet, action: str):
        chosen = list(queryset.defer("order_snapshot").select_related("store"))
        plan = [(sync, action_check(action, sync)) for sync in chosen]
        reason = request.POST.get("reason", "")
        if request.POST.get("confirm") != "yes" or (action == "resolve" and not reason.strip()):
            return TemplateResponse(request, "admin/orders/ordersync/confirm_action.html", {
                **self.admin_site.each_context(request),
                "title": f"{ACTIONS[action].label}: confirm",
                "action": ACTIONS[action],
                "action_name": f"bulk_{action}",
                "plan": plan,
                "will_do": sum(1 for _, skip in plan if skip is None),
                "needs_reason": action == "resolve",
                "reason_missing": request.POST.get("confirm") == "yes" and action == "resolve",
                "opts": self.model._meta,
                "selected": [sync.pk for sync in chosen],
            })
        done = 0
        for sync, skip in plan:
            if skip is not None:
                continue
            try:
                order_act(sync_id=sync.pk, action=action, by=request.user.get_username(), reason=reason)
                done += 1
            except ActionRefused as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{done} of {len(chosen)} order(s) {ACTIONS[action].verb}",
                          messages.SUCCESS if done else messages.WARNING)
        return None

    @admin.action(description="Retry now", permissions=["operate"])
    def bulk_retry(self, request, queryset):
        return self._bulk(request, queryset, "retry")

    @admin.action(description="Start handling (orders the ERP has accepted)", permissions=["operate"])
    def bulk_start_handling(self, request, queryset):
        return self._bulk(request, queryset, "start_handling")

    @admin.action(description="Resend to ERP (same idempotency key)", permissions=["operate"])
    def bulk_resend(self, request, queryset):
        return self._bulk(request, queryset, "resend")

    @admin.action(description="Mark resolved (handled outside the hub)", permissions=["operate"])
    def bulk_resolve(self, request, queryset):
        return self._bulk(request, queryset, "resolve")


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return text


@admin.register(SyncAttempt)
class SyncAttemptAdmin(PersonalDataAdminMixin, ReadOnlyAdmin):
    """The timeline of all orders, read-only: useful to look across orders at one kind of failure."""

    list_display = ["when_shown", "order", "step", "outcome", "http_status", "duration_ms", "triggered_by",
                    "message_shown"]
    list_filter = ["step", "outcome", "triggered_by"]
    search_fields = ["^order__order_id"]
    list_select_related = ["order"]
    raw_id_fields = ["order"]
    show_full_result_count = False
    # The texts quote VTEX and the ERP: the detail page shows them through masking display methods, never raw.
    fields = ["order", "step", "outcome", "http_status", "duration_ms", "triggered_by", "when_shown",
              "message_shown", "request_shown", "response_shown"]
    readonly_fields = fields

    when_shown = _when_field("created_at", "When")

    @admin.display(description="Message")
    def message_shown(self, obj: SyncAttempt) -> str:
        return shown(obj, obj.message)

    @admin.display(description="Request")
    def request_shown(self, obj: SyncAttempt) -> str:
        return format_html("<pre>{}</pre>", shown(obj, _pretty(obj.request_excerpt))) if obj.request_excerpt else "—"

    @admin.display(description="Answer")
    def response_shown(self, obj: SyncAttempt) -> str:
        return format_html("<pre>{}</pre>", shown(obj, _pretty(obj.response_excerpt))) if obj.response_excerpt else "—"


# Importing these registers the alert channels and history, the stores and the feed configurations (the last
# two here, not in core or feeds: their pages show orders' figures).
from orders import admin_alerts, admin_feed_config, admin_stores  # noqa: E402,F401
