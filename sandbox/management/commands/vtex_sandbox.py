"""`manage.py vtex_sandbox`: run the local VTEX Orders API + ERP receiver until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from sandbox.server import Sandbox


class Command(BaseCommand):
    help = (
        "Serve a fake VTEX Orders API (feed, get order, start-handling, invoice, tracking, cancel, hook config "
        "and hook notifications) and a fake ERP "
        "at /erp/orders, for demos and benchmarks. The app key and token it prints are sandbox-only "
        "values, not real secrets."
    )
    requires_system_checks: list[str] = []  # no DB or models here: run even when the project has check errors

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--orders", type=int, default=0, help="orders to create at start")
        parser.add_argument("--order-status", default="ready-for-handling", help="status of those orders")
        parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
        parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests answered 503")
        parser.add_argument("--rate-limit-rate", type=float, default=0.0, help="share answered 429")
        parser.add_argument("--retry-after", type=int, default=1,
                            help="Retry-After seconds sent with 429; a negative value sends no header")
        parser.add_argument("--broken-json-rate", type=float, default=0.0, help="share of 200s with truncated JSON")
        parser.add_argument("--duplicate-rate", type=float, default=0.0, help="share of feed events enqueued twice")
        parser.add_argument("--commit-fault-rate", type=float, default=0.0,
                            help="share of feed commits answered 503 (their items come back later)")
        parser.add_argument("--visibility-timeout", type=int, default=250,
                            help="seconds a read item stays hidden before VTEX shows it again")
        parser.add_argument("--hook-drop-rate", type=float, default=0.0,
                            help="share of hook notifications silently never sent (the feed must catch them)")
        parser.add_argument("--hook-delay-ms", type=float, default=0.0, help="delay before each hook notification")
        parser.add_argument("--hook-duplicate-rate", type=float, default=0.0,
                            help="share of hook notifications sent twice")
        parser.add_argument("--hook-retry-base", type=float, default=1.0,
                            help="seconds before the first retry of a failed notification (then doubling, up to 60)")
        parser.add_argument("--app-key", default="vtexappkey-sandbox-HUB")
        parser.add_argument("--app-token", default="sandbox-token", help="sandbox-only token, safe to print")
        parser.add_argument("--account", default="sandbox")
        parser.add_argument("--seed", type=int, default=None, help="make orders and faults reproducible")
        parser.add_argument("--trickle-per-minute", type=float, default=0.0,
                            help="keep creating ready-for-handling orders at this pace")

    def handle(self, *args: Any, **options: Any) -> None:
        sandbox = Sandbox(
            account=options["account"], app_key=options["app_key"], app_token=options["app_token"],
            latency_ms=options["latency_ms"], fault_rate=options["fault_rate"],
            rate_limit_rate=options["rate_limit_rate"], retry_after_seconds=options["retry_after"] if options["retry_after"] >= 0 else None,
            broken_json_rate=options["broken_json_rate"], duplicate_rate=options["duplicate_rate"],
            commit_fault_rate=options["commit_fault_rate"], visibility_timeout=options["visibility_timeout"],
            hook_drop_rate=options["hook_drop_rate"], hook_delay_ms=options["hook_delay_ms"],
            hook_duplicate_rate=options["hook_duplicate_rate"], hook_retry_base_seconds=options["hook_retry_base"],
            seed=options["seed"],
        )
        sandbox.create_orders(options["orders"], status=options["order_status"])
        sandbox.start(options["host"], options["port"])
        sandbox.start_trickle(options["trickle_per_minute"])
        # SIGTERM (docker stop, CI teardown) and SIGINT end the serve loop the same way; SIGINT is set
        # explicitly because a shell starting us in the background makes Python ignore it.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: sandbox.stop())
        self.stdout.write(
            f"VTEX sandbox at {sandbox.url} (ERP at {sandbox.erp_url}), account {sandbox.account}, "
            f"app key {sandbox.app_key}, app token {sandbox.app_token} (sandbox-only); "
            f"{options['orders']} order(s) created. Ctrl-C to stop."
        )
        self.stdout.flush()
        sandbox.serve_forever()
        self.stdout.write("VTEX sandbox stopped.")
