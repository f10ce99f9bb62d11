"""The processes a test started, read from /proc (which every Linux kernel has): who is below whom, who lives."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    return [child for child, parent in _parents().items() if parent == pid]


def descendants(root: int) -> set[int]:
    """Every process below `root`, whatever session it moved to."""
    parents = _parents()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def dead_pid() -> int:
    """A pid that no process has now: a child's, after it exited and was reaped (barring reuse within µs)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
