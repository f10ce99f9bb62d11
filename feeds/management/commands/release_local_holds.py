from django.core.management.base import BaseCommand

from feeds.leases import holder_is_gone
from feeds.models import JobLease


class Command(BaseCommand):
    help = ("Release the job leases (pull_feeds, dispatch_orders, pull-store:<id>) held by processes of this host "
            "that no longer exist, so that a restart after a stop or a crash does not wait for them to expire. "
            "A lease of another host, or of a process that still exists, is left alone. `make run` runs it when "
            "it starts and after it stopped everything. Order claims are not touched: they record no holder.")

    def handle(self, *args, **options) -> None:
        released = []
        for name, holder, until in JobLease.objects.exclude(holder="").values_list("name", "holder", "held_until"):
            # Matching the holder and expiry we read: a lease taken over meanwhile is not released.
            if holder_is_gone(holder) and JobLease.objects.filter(name=name, holder=holder, held_until=until).update(
                    held_until=None, holder=""):
                released.append(name)
        if released:
            self.stdout.write(f"Released {len(released)} job lease(s) of stopped processes: {', '.join(released)}")
        elif options["verbosity"] > 1:
            self.stdout.write("No job lease of a stopped process on this host")
