from django.core.management.base import BaseCommand

from feeds.schedules import SCHEDULES, schedules_setup


class Command(BaseCommand):
    help = ("Create or update the hub's django-q2 schedules (pull_feeds, dispatch_orders and evaluate_alerts every "
            "minute, refresh_queue_status every 5 minutes, reconcile_orders every HUB_RECONCILE_MINUTES, prune_history "
            "daily). "
            "Safe to run twice.")

    def handle(self, *args, **options) -> None:
        created = schedules_setup()
        self.stdout.write(f"{len(SCHEDULES)} schedule(s) in place, {len(created)} created")
