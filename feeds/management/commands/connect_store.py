from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from feeds.models import ErpConnection
from feeds.stores import parse_header, redact_url, store_connect


class Command(BaseCommand):
    help = "Create or update a VTEX store connection and its ERP connection. Running it twice changes nothing."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="a short name for the store (letters, digits, - and _)")
        parser.add_argument("--account", required=True, help="VTEX account name")
        parser.add_argument("--app-key", required=True)
        parser.add_argument("--app-token", required=True, help="stored, never printed")
        parser.add_argument("--environment", default="vtexcommercestable")
        parser.add_argument("--base-url", default="", help="override https://{account}.{environment}.com.br")
        parser.add_argument("--erp-url", required=True)
        parser.add_argument("--erp-header", action="append", default=[], metavar='"Name: value"',
                            help="extra header sent to the ERP (repeatable), e.g. an Authorization header")
        parser.add_argument("--erp-timeout", type=float, default=20.0)
        parser.add_argument("--erp-connector", default=ErpConnection.DEFAULT_CONNECTOR)

    def handle(self, *args, **o) -> None:
        try:
            headers = dict(parse_header(text) for text in o["erp_header"])
            result = store_connect(
                name=o["name"], account=o["account"], app_key=o["app_key"], app_token=o["app_token"],
                environment=o["environment"], base_url=o["base_url"], erp_url=o["erp_url"], erp_headers=headers,
                erp_timeout=o["erp_timeout"], erp_connector=o["erp_connector"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        store = result.store
        if result.created:
            verb = "created"
        elif result.changed:
            verb = "updated (" + ", ".join(result.changed) + ")"
        else:
            verb = "unchanged"
        self.stdout.write(f"store {store.name} {verb}: account {store.account}, VTEX {redact_url(store.vtex_base_url)}, "
                          f"app key {store.app_key}, app token set (hidden), ERP {redact_url(store.erp.url)}")
