"""An ERP connector plugged in by dotted path, as a store's `--erp-connector` names it."""

from __future__ import annotations

from orders.erp import ErpResult, HttpErpConnector


class TaggingConnector(HttpErpConnector):
    """The built-in HTTP connector plus a header of its own: enough to see which class was used."""

    def send(self, *, event: str, store_name: str, order_id: str, order: dict, idempotency_key: str) -> ErpResult:
        self.session.headers["X-Connector"] = "tagging"
        return super().send(event=event, store_name=store_name, order_id=order_id, order=order,
                            idempotency_key=idempotency_key)


class RaisesInInit(HttpErpConnector):
    """A connector that cannot even start (say, it fetches an OAuth token in its constructor)."""

    def __init__(self, connection) -> None:
        raise RuntimeError("connector could not start: no OAuth token")


class RaisesInSend(HttpErpConnector):
    """A connector with a bug outside the HTTP call."""

    def send(self, *, event: str, store_name: str, order_id: str, order: dict, idempotency_key: str) -> ErpResult:
        raise KeyError("customerRef")
