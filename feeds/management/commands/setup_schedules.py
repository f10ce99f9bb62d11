from django.core.management.base import BaseCommand

from feeds.schedules import SCHEDULES, schedules_setup


class Command(BaseCommand):
    help = ("Create or update the hub's django-q2 schedules (pull_feeds and dispatch_orders every minute, "
            "refresh_queue_status every 5 minutes). Safe to run twice.")

    def handle(self, *args, **options) -> None:
        created = schedules_setup()
        self.stdout.write(f"{len(SCHEDULES)} schedule(s) in place, {len(created)} created")
