import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.erp_api_key import erp_api_key_rotate
from core.models import Store
from core.store_checks import StoreCheck, StoreCheckFailed, store_connect_checked
from core.stores import hook_secret_generate, parse_header, redact_url

TOKEN_ENV = "VTEX_APP_TOKEN"
HOOK_SECRET_ENV = "HUB_HOOK_SECRET"
# Error keys from store_connect -> the option a user typed.
# Options that connect or change the store; --rotate-erp-api-key alone changes the key only, without the checks.
CONNECTION_OPTIONS = ("account", "app_key", "app_token_env", "app_token_stdin", "app_token", "hook_secret_env",
                      "hook_secret_stdin", "hook_secret", "generate_hook_secret", "environment", "base_url",
                      "erp_url", "erp_header_env", "erp_header", "erp_timeout", "erp_connector")
OPTIONS = {"name": "name", "account": "--account", "environment": "--environment", "base_url": "--base-url",
           "app_key": "--app-key", "app_token": "--app-token", "erp_url": "--erp-url", "erp_headers": "--erp-header",
           "erp_timeout_seconds": "--erp-timeout", "erp_connector": "--erp-connector", "hook_secret": "--hook-secret"}


class Command(BaseCommand):
    help = (f"Create or update a VTEX store connection and its ERP connection; an update changes only the options "
            f"given. Secrets stay off the command line: the app token comes from --app-token-env (${TOKEN_ENV}) or "
            "--app-token-stdin, ERP header values from --erp-header-env, the hook secret from --hook-secret-env "
            f"(${HOOK_SECRET_ENV}), --hook-secret-stdin or --generate-hook-secret. Before saving it checks the VTEX "
            "credentials (a read of the feed configuration) and that the ERP URL answers (HEAD); a refused token "
            "or an unreachable host saves nothing (--no-check skips both). Running it twice changes nothing.")
    stealth_options = ("stdin",)  # call_command(..., stdin=StringIO(...)) in tests

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="a short name for the store (letters, digits, - and _)")
        parser.add_argument("--account", help="VTEX account name (required for a new store)")
        parser.add_argument("--app-key", help="required for a new store")
        token = parser.add_mutually_exclusive_group()
        token.add_argument("--app-token-env", nargs="?", const=TOKEN_ENV, metavar="ENV_VAR",
                           help=f"read the app token from this environment variable (default ${TOKEN_ENV})")
        token.add_argument("--app-token-stdin", action="store_true", help="read the app token from standard input")
        token.add_argument("--app-token", help=f"for scripts only: visible in `ps` and shell history; prefer ${TOKEN_ENV}")
        hook = parser.add_mutually_exclusive_group()
        hook.add_argument("--hook-secret-env", nargs="?", const=HOOK_SECRET_ENV, metavar="ENV_VAR",
                          help=f"read the hook secret (VTEX sends it in X-Hub-Hook-Token) from this environment "
                               f"variable (default ${HOOK_SECRET_ENV})")
        hook.add_argument("--hook-secret-stdin", action="store_true", help="read the hook secret from standard input")
        hook.add_argument("--hook-secret", help=f"for scripts only: visible in `ps`; prefer ${HOOK_SECRET_ENV}")
        hook.add_argument("--generate-hook-secret", action="store_true",
                          help="store a new random hook secret (never printed: `hook_config push` sends it to VTEX)")
        parser.add_argument("--environment", help="default vtexcommercestable")
        parser.add_argument("--base-url", help="override https://{account}.{environment}.com.br (https, or http on loopback)")
        parser.add_argument("--erp-url", help="required for a new store")
        parser.add_argument("--erp-header-env", action="append", default=[], metavar="Name=ENV_VAR",
                            help="an ERP header whose value is read from that environment variable (repeatable)")
        parser.add_argument("--erp-header", action="append", default=[], metavar='"Name: value"',
                            help="an ERP header given on the command line (scripts; prefer --erp-header-env). "
                                 "Any header option replaces all stored headers; none keeps them")
        parser.add_argument("--erp-timeout", type=float, help="seconds, more than 0 and at most 120 (default 20)")
        parser.add_argument("--erp-connector", help="a dotted path listed in HUB_ERP_CONNECTORS")
        parser.add_argument("--rotate-erp-api-key", action="store_true",
                            help="make a new key for the ERP's API (/api/erp/<store>/…, sent as `Authorization: "
                                 "Bearer <key>`) and print it, once: only its hash is kept. The old key stops "
                                 "working at once. Alone, it changes nothing else and runs no check")
        parser.add_argument("--no-check", action="store_true",
                            help="save without checking the VTEX credentials and the ERP URL (e.g. VTEX or the ERP "
                                 "is not reachable from this machine yet)")

    def handle(self, *args, **o) -> None:
        if o["rotate_erp_api_key"] and not any(o[name] for name in CONNECTION_OPTIONS):
            store = Store.objects.filter(name=o["name"]).first()
            if store is None:
                raise CommandError(f"no store named {o['name']!r}: connect it first (--account, --app-key, ...)")
            self._rotate_erp_api_key(store)
            return
        if o["app_token_stdin"] and o["hook_secret_stdin"]:
            raise CommandError("--app-token-stdin and --hook-secret-stdin: only one secret can come from standard "
                               "input per run (give the other with --app-token-env / --hook-secret-env)")
        try:
            checked = store_connect_checked(
                check=not o["no_check"], report=self._report,
                name=o["name"], account=o["account"], app_key=o["app_key"], app_token=self._app_token(o),
                environment=o["environment"], base_url=o["base_url"], erp_url=o["erp_url"],
                erp_headers=self._headers(o), erp_timeout=o["erp_timeout"], erp_connector=o["erp_connector"],
                hook_secret=self._hook_secret(o),
            )
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from None
        except StoreCheckFailed as exc:
            failed = " and ".join(check.subject for check in exc.checks if check.failed)
            raise CommandError(f"nothing was saved: the {failed} check failed (see above). Fix it, or add --no-check "
                               "to save without checking.") from None
        result = checked.result
        store = result.store
        if result.created:
            verb = "created"
        elif result.changed:
            verb = "updated (" + ", ".join(result.changed) + ")"
        else:
            verb = "unchanged"
        self.stdout.write(f"store {store.name} {verb}: account {store.account}, VTEX {redact_url(store.vtex_base_url)}, "
                          f"app key {store.app_key}, app token set (hidden), ERP {redact_url(store.erp.url)}, "
                          f"ERP headers: {', '.join(sorted(store.erp.headers)) or 'none'} (values hidden), "
                          f"hook secret {'set (hidden)' if store.hook_secret else 'not set'}")
        if o["generate_hook_secret"]:
            # Never printed: the hub itself puts it in the hook configuration it pushes to VTEX.
            self.stdout.write(f"hook secret generated (stored encrypted); send it to VTEX with "
                              f"`manage.py hook_config push {store.name}`")
        if o["rotate_erp_api_key"]:
            self._rotate_erp_api_key(store)

    def _rotate_erp_api_key(self, store: Store) -> None:
        # The one place the key is ever shown: standard output, never a log.
        key = erp_api_key_rotate(store)
        self.stdout.write(f"new ERP API key of store {store.name} (the previous key no longer works):")
        self.stdout.write(key)
        self.stdout.write("It will not be shown again: only its hash is stored. The ERP sends it as "
                          "`Authorization: Bearer <key>`.")

    def _report(self, check: StoreCheck) -> None:
        style = {"ok": self.style.SUCCESS, "warning": self.style.WARNING}.get(check.verdict, self.style.ERROR)
        self.stdout.write(check.line, style)

    def _app_token(self, o: dict) -> str | None:
        return self._secret(o, "app_token")

    def _hook_secret(self, o: dict) -> str | None:
        return hook_secret_generate() if o["generate_hook_secret"] else self._secret(o, "hook_secret")

    def _secret(self, o: dict, name: str) -> str | None:
        """From the one source named (--NAME, --NAME-stdin, --NAME-env); None keeps the stored secret.

        The environment is read only when asked: a VTEX_APP_TOKEN left in a shell must not silently
        replace the token of whichever store is updated next.
        """
        if o[name] is not None:
            return o[name]
        if o[f"{name}_stdin"]:
            stdin = o.get("stdin") or sys.stdin
            return stdin.readline().strip()
        if variable := o[f"{name}_env"]:
            value = os.environ.get(variable, "").strip()
            if not value:
                option = "--" + name.replace("_", "-") + "-env"
                raise CommandError(f"{option}: the environment variable {variable} is not set")
            return value
        return None

    def _headers(self, o: dict) -> dict[str, str] | None:
        if not o["erp_header"] and not o["erp_header_env"]:
            return None
        headers = dict(parse_header(text) for text in o["erp_header"])
        for spec in o["erp_header_env"]:
            name, sep, variable = spec.partition("=")
            if not sep or not name.strip() or not variable.strip():
                raise CommandError(f"--erp-header-env must look like Name=ENV_VAR (got {spec!r})")
            value = os.environ.get(variable.strip())
            if value is None:
                raise CommandError(f"--erp-header-env {spec}: the environment variable {variable.strip()} is not set")
            headers[name.strip()] = value
        return headers


def _describe(exc: ValidationError) -> str:
    if not hasattr(exc, "error_dict"):
        return "; ".join(exc.messages)
    return "; ".join(f"{OPTIONS.get(key, key)}: {message}" for key, messages in exc.message_dict.items()
                     for message in messages)
