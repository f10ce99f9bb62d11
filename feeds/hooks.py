"""VTEX's order hook endpoint, POST /hooks/vtex/<store name>/: parse the request, call the inbox, answer.

No session, no login, no CSRF token: VTEX can send none of them. The caller is authenticated by the
X-Hub-Hook-Token header instead (feeds.hook_inbox).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from feeds.hook_inbox import HOOK_TOKEN_HEADER, hook_call_receive


@csrf_exempt
def hook_receive(request: HttpRequest, store_name: str) -> JsonResponse:
    answer = hook_call_receive(store_name=store_name, method=request.method or "", content_length=_length(request),
                               token=request.headers.get(HOOK_TOKEN_HEADER), read=request.read)
    response = JsonResponse(answer.body, status=answer.status)
    for name, value in answer.headers.items():
        response[name] = value
    return response


def _length(request: HttpRequest) -> int | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None
