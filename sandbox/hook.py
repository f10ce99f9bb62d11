"""Order Hook configuration: validation and the ping VTEX sends before saving it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

from sandbox.feed import ConfigError, FeedFilter, parse_filter

HOOK_TIMEOUT_SECONDS = 5.0  # VTEX gives notifications 5000 ms; undocumented for the ping, assumed the same


@dataclass
class HookConfig:
    stored: dict[str, Any]  # request shape, as the client sent it (normalized)
    filter: FeedFilter  # its own matcher: single-fire memory is per configuration, as for the feed
    url: str
    headers: dict[str, str]


def parse_hook_config(body: Any) -> HookConfig:
    """Validate `{"filter": ..., "hook": {"url", "headers"}}` (HookConfigurationRequest)."""
    if not isinstance(body, dict):
        raise ConfigError(400, "body must be a JSON object")
    stored_filter, matcher = parse_filter(body.get("filter"), status_required=True)
    hook = body.get("hook")
    if not isinstance(hook, dict) or not isinstance(hook.get("url"), str) or not hook["url"]:
        raise ConfigError(400, "hook.url is required")
    # The spec requires `headers` (the credentials the endpoint expects); an empty object is still "sent".
    headers = hook.get("headers")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(400, "hook.headers is required: an object of strings")
    # https-only is hinted at by VTEX's docs but unconfirmed; the sandbox must accept local http URLs.
    stored = {"filter": stored_filter, "hook": {"url": hook["url"], "headers": dict(headers)}}
    return HookConfig(stored=stored, filter=matcher, url=hook["url"], headers=dict(headers))


def copy_stored(config: HookConfig | None) -> dict[str, Any] | None:
    return None if config is None else json.loads(json.dumps(config.stored))


def ping(url: str, headers: dict[str, str]) -> str | None:
    """POST `{"hookConfig": "ping"}`; returns why it failed, or None when the endpoint answered 200."""
    try:
        response = requests.post(url, json={"hookConfig": "ping"}, headers=headers, timeout=HOOK_TIMEOUT_SECONDS)
    except (requests.RequestException, ValueError) as exc:  # ValueError: a header value requests refuses
        return f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return f"endpoint answered {response.status_code}"
    return None
