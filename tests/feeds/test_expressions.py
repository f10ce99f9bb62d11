"""JSONata under hard limits: runaway expressions are cut off in a child process, with a message staff can read."""

from __future__ import annotations

import time

from feeds.expressions import (
    DOCUMENT_MAX_BYTES,
    EXPRESSION_MAX_CHARS,
    VALUE_CHARS,
    WALL_SECONDS,
    ExpressionResult,
    expression_check,
    expression_evaluate,
)
from feeds.feed_config import jsonata_check, jsonata_test

# A bound, not a benchmark: the child is killed at WALL_SECONDS whatever the load; this covers reaping it.
MARGIN_SECONDS = 1.5
BACKTRACKING = '$match("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", /(a+)+$/)'
HUGE_STRING = '$length($pad("x", 1000000000))'


def timed(expression: str, document: object = None) -> tuple[ExpressionResult, float]:
    started = time.monotonic()
    result = expression_evaluate(expression, document or {})
    return result, time.monotonic() - started


def test_a_backtracking_regex_is_stopped_within_the_limit_with_a_message():
    result, elapsed = timed(BACKTRACKING)

    assert elapsed < WALL_SECONDS + MARGIN_SECONDS
    assert result.matched is None and not result.invalid
    assert result.error is not None and result.error.lower().startswith("too slow: stopped after")


def test_a_huge_string_is_stopped_by_the_memory_limit_with_a_message():
    result, elapsed = timed(HUGE_STRING)

    assert elapsed < WALL_SECONDS + MARGIN_SECONDS
    assert result.matched is None
    assert result.error is not None and result.error.lower().startswith("too big: memory limit reached")


def test_endless_recursion_is_stopped_as_too_slow():
    result, elapsed = timed("( $f := function($n){ $f($n + 1) }; $f(0) )")

    assert elapsed < WALL_SECONDS + MARGIN_SECONDS
    assert result.error is not None and result.error.startswith("Too slow: stopped after")


def test_a_normal_expression_gives_its_match_and_its_value():
    order = {"status": "ready-for-handling", "value": 15000, "items": [{"id": "1", "price": 5000},
                                                                        {"id": "2", "price": 10000}]}

    matches = expression_evaluate('status = "ready-for-handling" and value > 100', order)
    prices = expression_evaluate("items[price > 6000].id", order)
    nothing = expression_evaluate("items[price > 99999]", order)

    assert matches == ExpressionResult(matched=True, value="true", value_chars=4)
    assert (prices.matched, prices.value, prices.error) == (True, '"2"', None)
    assert nothing.matched is False and nothing.value is None and nothing.error is None  # undefined is false
    assert expression_evaluate("items.id", order).value == '[\n  "1",\n  "2"\n]'  # indented JSON
    assert expression_evaluate("city", {"city": "São Paulo"}).value == '"São Paulo"'


def test_a_long_value_is_cut_and_says_how_long_it_was():
    result = expression_evaluate('$pad("", 20000, "x")', {})

    assert result.matched is True and result.truncated
    assert len(result.value) == VALUE_CHARS and result.value_chars == 20_002  # with its quotes


def test_an_over_long_expression_is_refused_with_a_message_before_anything_runs():
    expression = "value > 1 and " * 200 + "true"
    assert len(expression) > EXPRESSION_MAX_CHARS

    started = time.monotonic()
    result = expression_evaluate(expression, {"value": 2})

    assert result.invalid and result.matched is None
    assert result.error == f"The expression is too long: {len(expression):,} characters; the limit is 2,000."
    assert expression_check(expression) == result.error == jsonata_check(expression)
    assert time.monotonic() - started < 0.5  # refused here, no child process started


def test_syntax_errors_and_evaluation_errors_are_told_apart():
    broken = expression_evaluate('status = "ready-for-handling" and', {})
    failing = expression_evaluate('"a" + 1', {})

    assert broken.invalid and broken.error.startswith("Invalid JSONata")
    assert not failing.invalid and failing.error.startswith("Evaluation failed")


def test_the_compile_check_runs_bounded_too():
    assert jsonata_check('status = "ready-for-handling"') is None
    assert jsonata_check("$count(items[").startswith("Invalid JSONata")
    assert jsonata_check("   ") == "The expression is empty."
    assert jsonata_check("(" * EXPRESSION_MAX_CHARS).startswith("Invalid JSONata")


def test_an_over_large_document_is_refused():
    document = {"blob": "x" * DOCUMENT_MAX_BYTES}

    result = jsonata_test("$length(blob)", document)

    assert result.matched is None and result.error.startswith("Too big: the document has")
