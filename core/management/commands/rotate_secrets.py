from django.core.management.base import BaseCommand, CommandError

from core.stores import secrets_check, secrets_rotate


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret with the first (newest) key of HUB_ENCRYPTION_KEYS. "
            "Afterwards the older keys can be removed from HUB_ENCRYPTION_KEYS.")

    def handle(self, *args, **options) -> None:
        report = secrets_check()
        if report.problems:  # all or nothing: refuse before rewriting anything
            raise CommandError("; ".join(report.problems))
        rewritten = secrets_rotate()
        self.stdout.write(f"re-encrypted {rewritten} secret(s) with the newest key")
