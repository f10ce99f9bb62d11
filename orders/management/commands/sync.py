import io
import os
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.models import Store
from core.stores import secrets_check
from orders.cycle import SyncStop, stop_grace_seconds, sync_with_workers, sync_workers_default


class Command(BaseCommand):
    help = ("Pull the VTEX feed and dispatch orders in the foreground, with the same code as the scheduled jobs, "
            "until the feed is empty and no order has work left. Exit 0 when idle; 1 on timeout, when a feed "
            "cannot be read (wrong URL or credentials, feed not configured) or after Ctrl-C / SIGTERM.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--store", help="only this store (its name)")
        parser.add_argument("--until-idle", action="store_true",
                            help="accepted and ignored, kept for scripts: running until idle is the only mode "
                                 "(the continuous service is `qcluster`)")
        parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds (600)")
        parser.add_argument("--progress", type=float, default=5.0, metavar="SECONDS",
                            help="print a progress line this often (5; 0: never)")
        parser.add_argument("--workers", type=int, default=None, metavar="N",
                            help="worker processes sharing the work (default: one per core, "
                                 f"{sync_workers_default()} here)")

    def handle(self, *args: Any, store: str | None, timeout: float, progress: float, workers: int | None,
               **options: Any) -> None:
        if workers is not None and workers < 1:
            raise CommandError("--workers must be at least 1")
        problems = secrets_check().problems  # a wrong key fails here, not in the middle of dispatch
        if problems:
            raise CommandError("; ".join(problems) + " (see `manage.py check_secrets`)")
        store_ids = None
        if store:
            found = Store.objects.filter(name=store).first()
            if found is None:
                raise CommandError(f"no store named {store!r} (see `manage.py connect_store`)")
            if not found.enabled:
                raise CommandError(f"store {store!r} is disabled")
            store_ids = [found.pk]
        elif not Store.objects.filter(enabled=True).exists():
            raise CommandError("no enabled store: connect one with `manage.py connect_store`")
        stop = SyncStop(grace=stop_grace_seconds(store_ids=store_ids))
        previous = self._on_signals(stop)
        try:
            result = sync_with_workers(workers=workers or sync_workers_default(), timeout=timeout,
                                       store_ids=store_ids, stop=stop, on_note=self._say, progress_every=progress)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.stdout.write(result.summary())
        if result.stopped:
            raise CommandError("stopped before idle: run `sync` again to finish")
        if result.problems:
            raise CommandError("; ".join(result.problems))  # each: "<store>: cannot read the feed at <host>: ..."
        if not result.idle:
            raise CommandError(f"not idle after {timeout:g}s")

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()  # a pipe would hold the line until the end otherwise

    def _on_signals(self, stop: SyncStop) -> dict[int, Any]:
        """SIGINT/SIGTERM: a graceful stop; a second one: exit at once (claims and leases then expire)."""
        owner = os.getpid()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != owner:
                return  # a just-forked worker, before it installs its own handler
            if stop():
                self._write_now("stopping now, without waiting\n")
                os._exit(1)
            stop.request()
            self._write_now(f"stopping: finishing the orders in hand (up to {stop.grace:.0f} s)…\n")

        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, on_signal)
            except ValueError:  # not the main thread (called from code, not a terminal): no handler
                break
        return previous

    def _write_now(self, text: str) -> None:
        """From a signal handler: os.write, since a buffered write interrupted by the handler cannot be re-entered."""
        try:
            fd = getattr(self.stdout, "_out", None).fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self.stdout.write(text, ending="")  # not a file (tests): no buffer to re-enter
            return
        os.write(fd, text.encode())
