from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What feeds and orders both build on: the store and its connections, the VTEX client, leases, the pause."""

    name = "core"
    verbose_name = "Stores"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from integrationhub.crypto import keys_check

        # Every process (web, qcluster, commands) stops here with one clear line, not mid-dispatch.
        keys_check()
        # Connects the cluster's guard (only the hub's own task functions run) in every process.
        from core import job_control  # noqa: F401
