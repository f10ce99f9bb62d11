from django.core.management.base import BaseCommand, CommandError

from feeds.cycle import sync_until_idle
from feeds.models import Store
from feeds.stores import secrets_check


class Command(BaseCommand):
    help = ("Pull the VTEX feed and dispatch orders in the foreground, with the same code as the scheduled jobs, "
            "until the feed is empty and no order has work left. Exit 0 when idle, 1 on timeout.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--store", help="only this store (its name)")
        parser.add_argument("--until-idle", action="store_true", required=True,
                            help="run until idle (the only mode; the continuous service is `qcluster`)")
        parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds (600)")

    def handle(self, *args, store: str | None, timeout: float, **options) -> None:
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
        result = sync_until_idle(timeout=timeout, store_ids=store_ids)
        self.stdout.write(result.summary())
        if result.blocked:
            raise CommandError("cannot read: " + "; ".join(result.blocked))
        if not result.idle:
            raise CommandError(f"not idle after {timeout:g}s")
