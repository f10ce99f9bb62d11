"""`make serve` as an operator runs it: gunicorn + whitenoise + qcluster against PostgreSQL, then SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from core.stores import store_connect
from orders.models import OrderSync
from tests.conftest import TOKEN
from tests.db_url import subprocess_database_url
from tests.deploy.conftest import ROOT
from tests.processes import alive, descendants

pytestmark = pytest.mark.django_db(transaction=True)
HTTPS = {"X-Forwarded-Proto": "https"}  # what the TLS proxy in front adds


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs) -> None:
        return None  # show us the redirect itself


_http = urllib.request.build_opener(_NoRedirect)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _http.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]






def _wait_for(what: str, check, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout} s; make serve said:\n{log.read_text()[-4000:]}")


@pytest.fixture
def serving(production_env, sandbox, transactional_db, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("make serve is tested against PostgreSQL (DATABASE_URL=postgres://...), as in production")
    store_connect(name="acme", account="sandbox", app_key="vtexappkey-sandbox-HUB", app_token=TOKEN,
                  base_url=sandbox.url, erp_url=sandbox.erp_url, erp_timeout=2.0)
    port = _free_port()
    env = {**production_env, "DATABASE_URL": subprocess_database_url(), "WEB_BIND": f"127.0.0.1:{port}",
           "WEB_WORKERS": "2", "HUB_JOB_BUDGET_SECONDS": "8", "HUB_IDLE_POLL_SECONDS": "0.2"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        make = subprocess.Popen(["make", "serve"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            if make.poll() is not None:
                pytest.fail(f"make serve exited with {make.returncode}:\n{log.read_text()[-4000:]}")
            try:
                return _get(f"{url}/healthz")[0] in (200, 503)
            except OSError:
                return False
        _wait_for("the web server answered", answers, 120, log)
        yield make, url, log
    finally:
        if make.poll() is None:  # the test failed before its own SIGTERM: leave nothing behind
            for pid in descendants(make.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            make.kill()
            make.wait(timeout=30)


def test_make_serve_serves_the_admin_static_files_health_and_jobs_then_stops_on_sigterm(serving, sandbox):
    make, url, log = serving
    order_ids = sandbox.create_orders(2)

    # The admin over "https" (as the proxy forwards it); plain http is redirected to https.
    status, headers, page = _get(f"{url}/admin/login/", HTTPS)
    assert status == 200, page[:500]
    assert "Secure" in headers.get("Set-Cookie", "") and "max-age=31536000" in headers["Strict-Transport-Security"]
    status, headers, _ = _get(f"{url}/admin/login/")
    assert status == 301 and headers["Location"] == f"https://127.0.0.1:{url.rsplit(':', 1)[1]}/admin/login/"

    # Its CSS, under the hashed name collectstatic gave it, from whitenoise with a long cache.
    css = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)
    assert css, page[:1500]
    status, headers, body = _get(url + css.group(1).decode(), HTTPS)
    assert status == 200 and b"body" in body
    assert "max-age=315360000" in headers["Cache-Control"] and "immutable" in headers["Cache-Control"]

    # The job cluster beside it moves the orders all the way.
    _wait_for("the orders reached handling_started", lambda: OrderSync.objects.filter(
        order_id__in=order_ids, state="handling_started").count() == len(order_ids), 150, log)

    # /healthz over plain http (load balancers probe without TLS): JSON, and healthy once both jobs ran.
    def healthy() -> dict | None:
        status, headers, body = _get(f"{url}/healthz")
        assert headers["Content-Type"] == "application/json"
        return json.loads(body) if status == 200 else None
    report = _wait_for("/healthz answered 200", healthy, 60, log)
    assert [store["name"] for store in report["stores"]] == ["acme"]

    # SIGTERM to make: make passes it on, bin/serve stops gunicorn and the cluster, nothing is left.
    processes = descendants(make.pid)
    assert len(processes) >= 5, processes  # bin/serve, gunicorn + 2 workers, qcluster + its workers
    make.send_signal(signal.SIGTERM)
    make.wait(timeout=40)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in processes):
        time.sleep(0.2)
    assert not [pid for pid in processes if alive(pid)], log.read_text()[-3000:]
    assert "Stopping the web server and the job cluster" in log.read_text()
    with pytest.raises(OSError):
        _get(f"{url}/healthz")  # the port is closed


def test_make_serve_fails_and_stops_the_job_cluster_when_the_web_server_cannot_start(production_env, tmp_path,
                                                                                      transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("make serve is tested against PostgreSQL (DATABASE_URL=postgres://...), as in production")
    with socket.socket() as taken:  # another program holds the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**production_env, "DATABASE_URL": subprocess_database_url(),
               "WEB_BIND": f"127.0.0.1:{taken.getsockname()[1]}"}
        make = subprocess.Popen(["make", "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 120
        while make.poll() is None and time.monotonic() < deadline:
            for pid in descendants(make.pid) - set(seen):  # qcluster and its workers, while they live
                try:
                    seen[pid] = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
                except OSError:
                    pass
            time.sleep(0.2)
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        output = make.communicate(timeout=30)[0].decode()

    assert make.returncode not in (0, None), output
    assert "Connection in use" in output or "Address already in use" in output, output
    assert any("manage.py qcluster" in command for command in seen.values()), seen  # it had started
    time.sleep(1)
    assert not [pid for pid in seen if alive(pid)], output
