"""Order Hook configuration: validation and the ping VTEX sends before saving it."""

from __future__ import annotations

from typing import Any

import requests

from sandbox.feed import ConfigError, parse_filter

PING_TIMEOUT_SECONDS = 5.0  # undocumented for the ping; VTEX gives notifications 5000 ms


def parse_hook_config(body: Any) -> dict[str, Any]:
    """Validate `{"filter": ..., "hook": {"url", "headers"}}`; returns the shape we store."""
    if not isinstance(body, dict):
        raise ConfigError(400, "body must be a JSON object")
    stored_filter, _ = parse_filter(body.get("filter"))
    hook = body.get("hook")
    if not isinstance(hook, dict) or not isinstance(hook.get("url"), str) or not hook["url"]:
        raise ConfigError(400, "hook.url is required")
    headers = hook.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(400, "hook.headers must be an object of strings")
    # https-only is hinted at by VTEX's docs but unconfirmed; the sandbox must accept local http URLs.
    return {"filter": stored_filter, "hook": {"url": hook["url"], "headers": dict(headers)}}


def ping(url: str, headers: dict[str, str]) -> str | None:
    """POST `{"hookConfig": "ping"}`; returns why it failed, or None when the endpoint answered 200."""
    try:
        response = requests.post(url, json={"hookConfig": "ping"}, headers=headers, timeout=PING_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return f"endpoint answered {response.status_code}"
    return None
