from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from feeds.services import event_work_register
        from orders.services.events import orders_note_events

        # Every stored feed event or hook notification records the order work it asks for, in its transaction.
        event_work_register(orders_note_events)
