"""The ERP's API, under /api/erp/<store name>/orders/<orderId>/: invoice, tracking and cancel, to be carried to VTEX.

No session, no login, no CSRF token: an ERP is a program. It authenticates with the store's ERP API key as a
bearer token. The checks run cheapest first, as on the hook endpoint (feeds/hooks.py): the method, the store
(404 when unknown or disabled), the key (401), and only then is the body read (at most MAX_BODY_BYTES: 413)
and parsed. The request is then checked against the order and recorded by orders.services.erp_requests;
an accepted one answers 202 with the hub's record, which the jobs send to VTEX.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from integrationhub.json_body import BodyNotJson, BodyTooLarge, json_body_read
from orders.models import ErpRequest
from orders.services.erp_requests import ErpRequestRefused, erp_api_authenticate, erp_request_record

log = logging.getLogger("hub.orders")

MAX_BODY_BYTES = 64 * 1024  # an invoice with its embedded XML is a few KB; anything near this is not one
Kind = ErpRequest.Kind


@csrf_exempt
@never_cache
def invoice(request: HttpRequest, store_name: str, order_id: str) -> JsonResponse:
    return _receive(request, store_name=store_name, order_id=order_id, kind=Kind.INVOICE)


@csrf_exempt
@never_cache
def tracking(request: HttpRequest, store_name: str, order_id: str, invoice_number: str) -> JsonResponse:
    return _receive(request, store_name=store_name, order_id=order_id, kind=Kind.TRACKING,
                    invoice_number=invoice_number)


@csrf_exempt
@never_cache
def cancel(request: HttpRequest, store_name: str, order_id: str) -> JsonResponse:
    return _receive(request, store_name=store_name, order_id=order_id, kind=Kind.CANCEL)


def _receive(request: HttpRequest, *, store_name: str, order_id: str, kind: str,
             invoice_number: str | None = None) -> JsonResponse:
    try:
        if request.method != "POST":
            raise ErpRequestRefused(405, "only POST", headers={"Allow": "POST"})
        store = erp_api_authenticate(store_name=store_name, authorization=request.headers.get("Authorization"))
        result = erp_request_record(store=store, order_id=order_id, kind=kind, body=_json_body(request),
                                    idempotency_key=request.headers.get("Idempotency-Key"),
                                    invoice_number=invoice_number)
    except ErpRequestRefused as refused:
        # The caller's names are their text: repr() keeps a line break out of the log.
        log.warning("ERP %s for %r / %r refused (%s): %s", kind, store_name[:64], order_id[:100], refused.status,
                    refused.reason)
        response = JsonResponse(refused.body, status=refused.status)
        for name, value in refused.headers.items():
            response[name] = value
        return response
    saved = result.request
    return JsonResponse({"id": saved.pk, "state": saved.state, "kind": saved.kind}, status=202)


def _json_body(request: HttpRequest) -> Any:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = None
    try:
        return json_body_read(content_length=length, read=request.read, max_bytes=MAX_BODY_BYTES)
    except BodyTooLarge:
        raise ErpRequestRefused(413, f"body over {MAX_BODY_BYTES} bytes") from None
    except BodyNotJson:
        raise ErpRequestRefused(400, "is not valid JSON", "body") from None


# Included by integrationhub/urls.py. No trailing slash, as VTEX's own paths; an invoice number may hold one.
urlpatterns = [
    path("<str:store_name>/orders/<str:order_id>/invoice", invoice, name="erp_api_invoice"),
    path("<str:store_name>/orders/<str:order_id>/invoices/<path:invoice_number>/tracking", tracking,
         name="erp_api_tracking"),
    path("<str:store_name>/orders/<str:order_id>/cancel", cancel, name="erp_api_cancel"),
]
