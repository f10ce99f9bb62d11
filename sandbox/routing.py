"""URL table: which route a request is, and whether it is VTEX (authenticated), ERP or control traffic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

ORDER = r"/api/oms/pvt/orders/(?P<order_id>[^/]+)"
INVOICE = ORDER + r"/invoice/(?P<invoice_number>[^/]+)"
_TABLE: list[tuple[str, str, str, str]] = [
    # (method, path regex, route name, kind)
    ("GET", r"/api/orders/feed/config", "feed_config_get", "vtex"),
    ("POST", r"/api/orders/feed/config", "feed_config_set", "vtex"),
    ("DELETE", r"/api/orders/feed/config", "feed_config_delete", "vtex"),
    ("GET", r"/api/orders/feed", "feed_read", "vtex"),
    ("POST", r"/api/orders/feed", "feed_commit", "vtex"),
    ("GET", r"/api/orders/hook/config", "hook_config_get", "vtex"),
    ("POST", r"/api/orders/hook/config", "hook_config_set", "vtex"),
    ("DELETE", r"/api/orders/hook/config", "hook_config_delete", "vtex"),
    ("GET", r"/api/oms/pvt/orders", "order_list", "vtex"),
    ("GET", ORDER, "order_get", "vtex"),
    ("POST", ORDER + "/start-handling", "start_handling", "vtex"),
    ("POST", ORDER + "/cancel", "cancel", "vtex"),
    ("POST", ORDER + "/invoice", "invoice", "vtex"),
    ("PATCH", INVOICE, "tracking", "vtex"),  # Updatepartialinvoice.SendTrackingNumber
    ("PUT", INVOICE + "/tracking", "tracking_status", "vtex"),  # UpdateTrackingStatus: the carrier's events
    ("POST", r"/erp/orders", "erp", "erp"),
    ("GET", r"/erp/orders", "erp_list", "erp"),
    ("GET", r"/_sandbox/stats", "control_stats", "control"),
    ("POST", r"/_sandbox/orders", "control_orders", "control"),
    ("POST", r"/_sandbox/orders/(?P<order_id>[^/]+)/status", "control_status", "control"),
    ("GET", r"/_sandbox/orders/(?P<order_id>[^/]+)", "control_order", "control"),
    ("POST", r"/_sandbox/faults", "control_faults", "control"),
    ("POST", r"/_sandbox/fail-next", "control_fail_next", "control"),
    ("GET", r"/_sandbox/erp/deliveries", "control_deliveries", "control"),
    ("GET", r"/_sandbox/hook/deliveries", "control_hook_deliveries", "control"),
]
_COMPILED = [(method, re.compile(pattern + r"/?"), name, kind) for method, pattern, name, kind in _TABLE]


@dataclass(frozen=True)
class Route:
    name: str
    kind: str  # "vtex", "erp" or "control"
    order_id: str = ""
    invoice_number: str = ""


def match_route(method: str, path: str) -> Route | None:
    for route_method, pattern, name, kind in _COMPILED:
        if route_method == method and (match := pattern.fullmatch(path)):
            groups = match.groupdict()
            return Route(name=name, kind=kind, order_id=unquote(groups.get("order_id") or ""),
                         invoice_number=unquote(groups.get("invoice_number") or ""))
    return None


def allowed_methods(path: str) -> list[str]:
    """Methods some route accepts on `path`, for a 405's `Allow` header; [] when the path is unknown."""
    return sorted({method for method, pattern, _, _ in _COMPILED if pattern.fullmatch(path)})
