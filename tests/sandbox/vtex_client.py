"""Shared by the sandbox tests: a tiny authenticated VTEX client and VTEX's example payloads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import requests

from sandbox.server import Sandbox

FIXTURES = Path(__file__).resolve().parents[2] / "sandbox" / "fixtures"
ISO_7_DIGITS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class Vtex:
    """A tiny authenticated client, so tests read like the calls the hub makes."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.session = requests.Session()
        self.session.headers.update({"X-VTEX-API-AppKey": sandbox.app_key, "X-VTEX-API-AppToken": sandbox.app_token,
                                     "Accept": "application/json"})

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.request(method, self.sandbox.url + path, **kwargs)

    def read(self, maxlot: int = 10) -> list[dict[str, Any]]:
        response = self.request("GET", "/api/orders/feed", params={"maxlot": maxlot})
        assert response.status_code == 200, response.text
        return response.json()

    def commit(self, handles: list[str]) -> requests.Response:
        return self.request("POST", "/api/orders/feed", json={"handles": handles})

    def start_handling(self, order_id: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", f"/api/oms/pvt/orders/{order_id}/start-handling", **kwargs)
