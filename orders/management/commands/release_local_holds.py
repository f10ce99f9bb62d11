from django.core.management.base import BaseCommand

from feeds.leases import holder_is_gone
from feeds.models import JobLease
from orders.services.process import claims_release_dead_local


class Command(BaseCommand):
    help = ("Release the job leases (pull_feeds, dispatch_orders, pull-store:<id>) and the order claims held by "
            "processes of this host that no longer exist, so that a restart after a stop or a crash does not wait "
            "for them to expire. What another host or a live process holds is left alone. `make run` runs it when "
            "it starts and after it stopped everything; every dispatch run frees such claims too.")

    def handle(self, *args, **options) -> None:
        released = []
        for name, holder, until in JobLease.objects.exclude(holder="").values_list("name", "holder", "held_until"):
            # Matching the holder and expiry we read: a lease taken over meanwhile is not released.
            if holder_is_gone(holder) and JobLease.objects.filter(name=name, holder=holder, held_until=until).update(
                    held_until=None, holder=""):
                released.append(name)
        claims = claims_release_dead_local()
        if released:
            self.stdout.write(f"Released {len(released)} job lease(s) of stopped processes: {', '.join(released)}")
        if claims:
            self.stdout.write(f"Released {claims} order claim(s) of stopped processes")
        if not released and not claims and options["verbosity"] > 1:
            self.stdout.write("No job lease or order claim of a stopped process on this host")
