import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from feeds.models import Store


class Command(BaseCommand):
    help = ("Create an admin user if there is none (HUB_ADMIN_USERNAME / HUB_ADMIN_PASSWORD, or a generated "
            "password printed once), then print the number of real (non-sandbox) VTEX stores.")

    def handle(self, *args, **options) -> None:
        users = get_user_model()
        if not users.objects.filter(is_superuser=True).exists():
            username = os.environ.get("HUB_ADMIN_USERNAME", "admin")
            password = os.environ.get("HUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            users.objects.create_superuser(username=username, email="", password=password)
            shown = "from HUB_ADMIN_PASSWORD" if os.environ.get("HUB_ADMIN_PASSWORD") else password
            self.stderr.write(f"Created admin user {username!r}, password: {shown}")
        # A store pointed at a base URL on this machine is a sandbox, not a real VTEX account.
        real = Store.objects.exclude(base_url__startswith="http://127.0.0.1").exclude(
            base_url__startswith="http://localhost").count()
        self.stdout.write(str(real))
