"""Reading a JSON request body that others send us (VTEX's order hook, the ERP's API): bounded, and only what
PostgreSQL's jsonb can store. Each endpoint maps the two failures to its own answer (413, 400)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class BodyTooLarge(Exception):
    pass


class BodyNotJson(Exception):
    pass


def json_body_read(*, content_length: int | None, read: Callable[[int], bytes], max_bytes: int) -> Any:
    """The parsed body; never reads more than `max_bytes` + 1 bytes, whatever Content-Length claimed."""
    if content_length is not None and content_length > max_bytes:
        raise BodyTooLarge
    body = read(max_bytes + 1)
    if len(body) > max_bytes:
        raise BodyTooLarge
    try:
        payload = json.loads(body, parse_constant=_no_constant)
        # PostgreSQL's jsonb takes neither NUL nor lone surrogates: refuse them here, not as a 500 later.
        if "\\u0000" in json.dumps(payload):
            raise ValueError("NUL character")
        json.dumps(payload, ensure_ascii=False).encode()
    except (ValueError, UnicodeError, RecursionError):
        raise BodyNotJson from None
    return payload


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
