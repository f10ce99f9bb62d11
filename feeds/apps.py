from django.apps import AppConfig


class FeedsConfig(AppConfig):
    name = "feeds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.stores import store_connect_register
        from feeds.feed_config import feed_config_default

        # A store is connected with its default feed configuration, in the same transaction (core imports no feeds).
        store_connect_register(feed_config_default)
