from django.core.management.base import BaseCommand, CommandParser

from orders.services.prune import history_prune


class Command(BaseCommand):
    help = ("Remove what is older than HUB_RETENTION_DAYS (90) and no order needs, as the daily prune_history job "
            "does: committed feed events, settled orders' timelines, resolved alerts, failed job records. "
            "Runs until done, 5,000 rows per transaction.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would be removed; remove nothing")

    def handle(self, *args, **options) -> None:
        self.stdout.write(history_prune(dry_run=options["dry_run"]).summary())
