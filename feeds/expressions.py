"""JSONata checked and evaluated under hard limits, in a short-lived child process.

jsonata-python runs an expression in the calling process with no real bound: a backtracking regex
(`$match("aaaa…a!", /(a+)+$/)`) ran for 25 s inside `re`, out of reach of JSONata's own timer, and
`$pad("x", 1000000000)` took 3 GB. So every compile-check and evaluation here runs in a fresh
interpreter (`python -I feeds/expression_runner.py`: no Django, no fork of a threaded web process, an
empty environment) that limits itself before it reads the expression.

Limits, per call:
- expression: at most EXPRESSION_MAX_CHARS (2,000) characters, refused before any process starts;
- document: at most DOCUMENT_MAX_BYTES (1,000,000) bytes as JSON, refused likewise;
- CPU time: RLIMIT_CPU CPU_SECONDS (2 s; SIGXCPU, then SIGKILL one second later), and JSONata's own
  timer at three quarters of it (1.5 s), which ends a slow JSONata loop with a clean answer (a regex
  runs inside `re`, out of that timer's reach: RLIMIT_CPU stops it);
- memory: RLIMIT_AS MEMORY_BYTES (512 MB of address space; the interpreter with jsonata uses ~20 MB);
- wall clock: WALL_SECONDS (5 s), then the child is killed with SIGKILL (a stalled child uses no CPU);
- output: the value is shown as indented JSON cut at VALUE_CHARS (10,000) characters, and an answer
  over OUTPUT_MAX_BYTES (256 KB) is refused.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("hub.feeds")

EXPRESSION_MAX_CHARS = 2_000
DOCUMENT_MAX_BYTES = 1_000_000
CPU_SECONDS = 2
MEMORY_BYTES = 512 * 1024 * 1024
WALL_SECONDS = 5.0
VALUE_CHARS = 10_000
OUTPUT_MAX_BYTES = 256 * 1024  # VALUE_CHARS characters, each at most 12 bytes as JSON escapes

RUNNER = Path(__file__).with_name("expression_runner.py")
TOO_BIG = f"Too big: memory limit reached ({MEMORY_BYTES // (1024 * 1024)} MB)."
# Children started by this process: lets tests check that a refused request evaluated nothing.
children_started = 0


@dataclass(frozen=True)
class ExpressionResult:
    """What an expression says about one document: `matched` and its `value`, or the `error` that stopped it.

    `invalid` is set when the expression itself was refused (syntax, length), as opposed to failing on
    this document. `value` is indented JSON, None for null/undefined; `value_chars` is its full length.
    """

    matched: bool | None
    value: str | None = None
    value_chars: int = 0
    error: str | None = None
    invalid: bool = False

    @property
    def truncated(self) -> bool:
        return self.value is not None and self.value_chars > len(self.value)


def _refusal(expression: str) -> str | None:
    """Why an expression is refused without running anything, or None."""
    if not expression or not expression.strip():
        return "The expression is empty."
    if len(expression) > EXPRESSION_MAX_CHARS:
        return (f"The expression is too long: {len(expression):,} characters; "
                f"the limit is {EXPRESSION_MAX_CHARS:,}.")
    return None


def _too_slow(seconds: float, what: str = "") -> str:
    return f"Too slow: stopped after {seconds:g} s{what}."


def _run_child(request: dict[str, Any]) -> dict[str, Any]:
    """The runner's answer, or {"kind": "error", "message": ...} when the child was stopped or broke."""
    global children_started
    command = [sys.executable, "-I", str(RUNNER), str(CPU_SECONDS), str(MEMORY_BYTES), str(VALUE_CHARS)]
    children_started += 1
    try:
        # run() kills the child with SIGKILL when the timeout passes, then reaps it.
        done = subprocess.run(command, input=json.dumps(request).encode(), capture_output=True,
                              timeout=WALL_SECONDS, env={}, close_fds=True, check=False)
    except subprocess.TimeoutExpired:
        return {"kind": "error", "message": _too_slow(WALL_SECONDS)}
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return {"kind": "error", "message": _too_slow(CPU_SECONDS, " of CPU time")}
    if done.returncode != 0:
        stderr = done.stderr[-2000:].decode(errors="replace")
        if "MemoryError" in stderr:  # raised where the runner could not catch it, e.g. while starting
            return {"kind": "error", "message": TOO_BIG}
        log.warning("expression runner exited %s: %s", done.returncode, stderr)
        return {"kind": "error", "message": f"The expression checker failed (exit {done.returncode})."}
    if len(done.stdout) > OUTPUT_MAX_BYTES:  # the runner cuts the value; this is the backstop
        return {"kind": "error", "message": f"Too big: the answer is over {OUTPUT_MAX_BYTES:,} bytes."}
    try:
        return json.loads(done.stdout)
    except ValueError:
        log.warning("expression runner answered no JSON: %r", done.stdout[:200])
        return {"kind": "error", "message": "The expression checker gave no answer."}


def _result(answer: dict[str, Any]) -> ExpressionResult:
    kind = answer.get("kind")
    if kind == "ok":
        return ExpressionResult(matched=answer.get("matched"), value=answer.get("value"),
                                value_chars=int(answer.get("value_chars") or 0))
    if kind == "invalid":
        return ExpressionResult(matched=None, error=f"Invalid JSONata: {answer.get('message')}", invalid=True)
    if kind == "failed":
        return ExpressionResult(matched=None, error=f"Evaluation failed: {answer.get('message')}")
    if kind == "slow":
        return ExpressionResult(matched=None, error=_too_slow(float(answer.get("seconds") or CPU_SECONDS)))
    if kind == "memory":
        return ExpressionResult(matched=None, error=TOO_BIG)
    return ExpressionResult(matched=None, error=str(answer.get("message") or "The expression checker failed."))


def expression_check(expression: str) -> str | None:
    """Why a JSONata expression cannot be used (too long, does not compile, too slow to compile), or None."""
    if refusal := _refusal(expression):
        return refusal
    return _result(_run_child({"expression": expression, "evaluate": False})).error


def expression_evaluate(expression: str, document: Any) -> ExpressionResult:
    """Evaluate like VTEX's FromOrders filter: the value, cast the JSONata way ($boolean), decides the match."""
    if refusal := _refusal(expression):
        return ExpressionResult(matched=None, error=refusal, invalid=True)
    size = len(json.dumps(document).encode())
    if size > DOCUMENT_MAX_BYTES:
        return ExpressionResult(matched=None, error=f"Too big: the document has {size:,} bytes; "
                                                    f"the limit is {DOCUMENT_MAX_BYTES:,}.")
    return _result(_run_child({"expression": expression, "document": document, "evaluate": True}))
