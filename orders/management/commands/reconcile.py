from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.services.reconcile import orders_reconcile, stores_named


class Command(BaseCommand):
    help = ("Ask VTEX (List orders) for the orders waiting in ready-for-handling longer than "
            "HUB_RECONCILE_MIN_AGE_MINUTES, and queue those no feed or hook event brought, as the scheduled "
            "reconcile_orders job does. The orders are then worked by the jobs (or `sync`).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--store", action="append", metavar="NAME",
                            help="only this enabled store (repeat for several); default: every enabled store")

    def handle(self, *args, **options) -> None:
        names = options["store"]
        if names:
            names, refused = stores_named(names)
            if refused:
                raise CommandError(f"no enabled store named {', '.join(refused)}")
        report = orders_reconcile(store_names=names)
        for store_name, order_id in report.found:
            self.stdout.write(f"{store_name}: found {order_id}")
        self.stdout.write(report.summary())
        if report.failed or report.paused:
            raise CommandError("not every store could be checked: run it again later")
