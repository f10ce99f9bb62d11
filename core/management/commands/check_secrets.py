from django.core.management.base import BaseCommand, CommandError

from core.stores import secrets_check


class Command(BaseCommand):
    help = ("Check that every stored app token and ERP header set decrypts with HUB_ENCRYPTION_KEYS. "
            "Exit 1 naming each store that does not (run it before starting the web server and qcluster).")

    def handle(self, *args, **options) -> None:
        report = secrets_check()
        if report.problems:
            raise CommandError("; ".join(report.problems) + ". Put the key they were encrypted with in "
                               "HUB_ENCRYPTION_KEYS (newest first), then run `manage.py rotate_secrets`")
        hint = f"; {report.stale} under an older key: run `manage.py rotate_secrets`" if report.stale else ""
        self.stdout.write(f"secrets ok: {report.checked} stored secret(s) decrypt{hint}")
