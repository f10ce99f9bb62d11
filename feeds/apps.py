from django.apps import AppConfig


class FeedsConfig(AppConfig):
    name = "feeds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from integrationhub.crypto import keys_check

        # Every process (web, qcluster, commands) stops here with one clear line, not mid-dispatch.
        keys_check()
        # Connects the cluster's guard (only the hub's own task functions run) in every process.
        from feeds import job_control  # noqa: F401
