from django.core.management.base import BaseCommand

from core.leases import leases_release_dead_local
from orders.services.process import claims_release_dead_local


class Command(BaseCommand):
    help = ("Release the job leases (pull_feeds, dispatch_orders, pull-store:<id>) and the order claims held by "
            "processes of this host that no longer exist, so that a restart after a stop or a crash does not wait "
            "for them to expire. What another host or a live process holds is left alone. `make run` runs it when "
            "it starts and after it stopped everything; every dispatch run frees such claims too.")

    def handle(self, *args, **options) -> None:
        released = leases_release_dead_local()
        claims = claims_release_dead_local()
        if released:
            self.stdout.write(f"Released {len(released)} job lease(s) of stopped processes: {', '.join(released)}")
        if claims:
            self.stdout.write(f"Released {claims} order claim(s) of stopped processes")
        if not released and not claims and options["verbosity"] > 1:
            self.stdout.write("No job lease or order claim of a stopped process on this host")
