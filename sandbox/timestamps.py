"""VTEX-style timestamps: ISO 8601 UTC with 7 fractional digits (.NET ticks)."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def _split(t: float) -> tuple[str, int]:
    seconds = int(t)
    # .NET prints 100 ns ticks, so VTEX timestamps carry 7 fractional digits.
    ticks = min(int(round((t - seconds) * 10_000_000)), 9_999_999)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), ticks


def iso_z(t: float | None = None) -> str:
    """Feed style: `2026-11-26T20:54:23.7153839Z`."""
    base, ticks = _split(time.time() if t is None else t)
    return f"{base}.{ticks:07d}Z"


def iso_offset(t: float | None = None) -> str:
    """Order document style: `2024-02-06T20:46:11.7010747+00:00`."""
    base, ticks = _split(time.time() if t is None else t)
    return f"{base}.{ticks:07d}+00:00"
