"""The child process of feeds.expressions: limit itself, then compile (and evaluate) one JSONata expression.

Run as a plain script (`python -I feeds/expression_runner.py CPU_SECONDS MEMORY_BYTES VALUE_CHARS`): it imports
nothing of the hub and no Django. It reads {"expression": str, "document": any, "evaluate": bool} as JSON on
stdin and writes one JSON object on stdout, whose "kind" is one of:
  ok       {"matched": bool, "value": str | None, "value_chars": int}  (value: pretty JSON, cut at VALUE_CHARS)
  invalid  {"message": str}   the expression does not compile
  failed   {"message": str}   it compiled but its evaluation raised
  slow     {"seconds": float} JSONata's own timer stopped it
  memory   {}                 the memory limit was reached
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any

MESSAGE_CHARS = 1_000  # an error message can quote the expression or the document back

def limit_self(*, cpu_seconds: int, memory_bytes: int) -> None:
    """Hard limits set before any untrusted input is read; a child may always lower its own limits."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would otherwise dump a core
    _lower(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)  # SIGXCPU at the soft limit, SIGKILL at the hard
    _lower(resource.RLIMIT_AS, memory_bytes, memory_bytes)


def _lower(which: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:  # raising a hard limit is refused: keep the stricter one
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))


def _not_json(value: Any) -> str:
    # JSONata can return a function; VTEX would see it as truthy, staff see what it is.
    return f"<{type(value).__name__}: not JSON>"


def shown(value: Any, value_chars: int) -> tuple[str | None, int]:
    """The value as indented JSON cut at value_chars, and its full length; None for null/undefined."""
    if value is None:
        return None, 0
    text = json.dumps(value, indent=2, ensure_ascii=False, default=_not_json)
    return text[:value_chars], len(text)


def run(request: dict[str, Any], *, value_chars: int, timeout_ms: int) -> dict[str, Any]:
    import jsonata  # imported under the limits: a broken install fails here, not in the web process
    from jsonata.functions import Functions
    from jsonata.jexception import JException

    try:
        compiled = jsonata.Jsonata(request["expression"], timeout=timeout_ms, stack=200)
    except MemoryError:
        raise
    except RecursionError:
        return {"kind": "invalid", "message": "the expression is nested too deeply"}
    except Exception as exc:  # noqa: BLE001 - the parser raises JException and, on odd input, plain errors
        return {"kind": "invalid", "message": str(exc)[:MESSAGE_CHARS]}
    if not request.get("evaluate"):
        return {"kind": "ok", "matched": None, "value": None, "value_chars": 0}
    try:
        value = compiled.evaluate(request.get("document"))
    except MemoryError:
        raise
    except JException as exc:
        if exc.error == "D1012":
            return {"kind": "slow", "seconds": timeout_ms / 1000}
        return {"kind": "failed", "message": str(exc)[:MESSAGE_CHARS]}
    except RecursionError:
        return {"kind": "failed", "message": "recursion too deep"}
    except Exception as exc:  # noqa: BLE001 - evaluation errors (types, arithmetic) are reported, not raised
        return {"kind": "failed", "message": (str(exc) or type(exc).__name__)[:MESSAGE_CHARS]}
    text, full = shown(value, value_chars)
    return {"kind": "ok", "matched": bool(Functions.to_boolean(value)), "value": text, "value_chars": full}


def main() -> None:
    cpu_seconds, memory_bytes, value_chars = (int(arg) for arg in sys.argv[1:4])
    limit_self(cpu_seconds=cpu_seconds, memory_bytes=memory_bytes)
    try:
        request = json.loads(sys.stdin.buffer.read())
        # JSONata's own timer fires a little before SIGXCPU, so a slow loop ends with a clean answer.
        answer = run(request, value_chars=value_chars, timeout_ms=cpu_seconds * 750)
    except MemoryError:
        answer = {"kind": "memory"}
    # ASCII escapes: a lone surrogate in a value cannot break the encoding of the answer.
    sys.stdout.buffer.write(json.dumps(answer).encode())


if __name__ == "__main__":
    main()
