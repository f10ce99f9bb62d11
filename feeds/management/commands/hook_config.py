import json

from django.core.management.base import BaseCommand, CommandError

from core.models import Store
from feeds.hook_config import hook_config_delete, hook_config_load, hook_config_push


class Command(BaseCommand):
    help = ("The store's order hook on VTEX. push: create or replace it (the store's feed filter, "
            "HUB_PUBLIC_URL/hooks/vtex/STORE/, and the store's hook secret as the X-Hub-Hook-Token header; VTEX "
            "pings the hub before it saves). show: VTEX's copy next to the hub's (header values hidden). "
            "delete: remove it from VTEX. Exit 1 when VTEX refuses or the hub cannot build the configuration.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["push", "show", "delete"])
        parser.add_argument("store", help="the store's name")

    def handle(self, *args, **o) -> None:
        store = Store.objects.filter(name=o["store"]).first()
        if store is None:
            raise CommandError(f"no store named {o['store']!r}")
        if o["action"] == "show":
            loaded = hook_config_load(store=store)
            if not loaded.ok:
                raise CommandError(loaded.message)
            if loaded.vtex is not None:
                self.stdout.write(json.dumps(loaded.vtex, indent=2, sort_keys=True))
            for item in loaded.drift:
                self.stdout.write(f"  {item.label}: hub {item.hub!r}, VTEX {item.vtex!r}")
            self.stdout.write(loaded.message)
            return
        act = hook_config_push if o["action"] == "push" else hook_config_delete
        result = act(store=store, by="manage.py hook_config")
        if not result.ok:
            raise CommandError(result.message)
        self.stdout.write(result.message)
