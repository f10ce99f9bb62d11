import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Q

from core.job_control import schedule_paused
from core.jobs import job_continue
from core.models import Store

SANDBOX_STORE = "sandbox"  # the name `make run` connects the sandbox under
# A store pointed at a base URL on this machine is a sandbox, not a real VTEX account.
LOCAL = Q(base_url__startswith="http://127.0.0.1") | Q(base_url__startswith="http://localhost")
# The continuous jobs, by schedule name (feeds/schedules.py).
CHAINS = {"pull_feeds": "feeds.tasks.pull_feeds", "dispatch_orders": "orders.tasks.dispatch_orders"}


class Command(BaseCommand):
    help = ("`make run`'s start-up: create an admin user if there is none (HUB_ADMIN_USERNAME / HUB_ADMIN_PASSWORD, "
            "or a generated password printed once), then print the names of the enabled real (non-sandbox) VTEX "
            "stores, one a line.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sandbox-store-follows", action="store_true",
                            help=f"disable the store {SANDBOX_STORE!r} on the local sandbox while a real store is "
                                 "enabled (it would fail forever, no sandbox runs then), enable it again otherwise")
        parser.add_argument("--start-jobs", action="store_true",
                            help="queue a pull and a dispatch run now: django-q2 looks at the schedules only 30 s "
                                 "after it starts, and a stopped run's queued task comes back after `retry`")

    def handle(self, *args, **options) -> None:
        users = get_user_model()
        if not users.objects.filter(is_superuser=True).exists():
            username = os.environ.get("HUB_ADMIN_USERNAME", "admin")
            password = os.environ.get("HUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            users.objects.create_superuser(username=username, email="", password=password)
            shown = "from HUB_ADMIN_PASSWORD" if os.environ.get("HUB_ADMIN_PASSWORD") else password
            self.stderr.write(f"Created admin user {username!r}, password: {shown}")
        real = list(Store.objects.exclude(LOCAL).filter(enabled=True).values_list("name", flat=True))
        if options["sandbox_store_follows"]:
            self._sandbox_store_follow(real)
        if options["start_jobs"]:
            # A second chain is harmless: each run takes its job's lease first, and one that cannot ends at once.
            for name, func in CHAINS.items():
                if not schedule_paused(name):  # staff paused it: starting it here would undo that
                    job_continue(func)
        for name in real:
            self.stdout.write(name)

    def _sandbox_store_follow(self, real: list[str]) -> None:
        sandbox = Store.objects.filter(LOCAL, name=SANDBOX_STORE)
        if real and sandbox.filter(enabled=True).update(enabled=False):
            self.stderr.write(f"Disabled the store {SANDBOX_STORE!r} (the local sandbox, which does not run while a "
                              f"real store is connected: {', '.join(real)}). Its orders stay in the admin.")
        elif not real and sandbox.filter(enabled=False).update(enabled=True):
            self.stderr.write(f"Enabled the store {SANDBOX_STORE!r} again: no real store is enabled, so the "
                              "sandbox runs.")
