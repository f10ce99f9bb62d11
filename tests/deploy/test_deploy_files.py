"""The files docs/deploy.md tells an operator to install: systemd units, the Procfile, nginx, the dev .env."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.db_url import subprocess_database_url
from tests.deploy.conftest import ROOT, manage
from tests.deploy.test_serve import _free_port, _get
from tests.processes import descendants

UNITS = ["integrationhub-web.service", "integrationhub-qcluster.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_the_systemd_unit_passes_systemd_analyze_verify(unit, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # The unit names /srv/integrationhub; verify checks that its executables exist, so point it here.
    text = (ROOT / "deploy" / unit).read_text().replace("/srv/integrationhub", str(ROOT))
    text = text.replace("User=integrationhub", "User=root").replace("Group=integrationhub", "Group=root")
    (tmp_path / unit).write_text(text)

    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if unit in line], result.stderr


def _stop_group(process: subprocess.Popen) -> None:
    """What a process manager does: SIGTERM to the group, SIGKILL to whatever is left after 15 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=15)


def _procfile() -> dict[str, str]:
    return dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())


def _procfile_env(production_env: dict[str, str], **extra: str) -> dict[str, str]:
    # A Procfile host puts the app's virtualenv first on PATH: `python` and `gunicorn` are its own.
    return {**production_env, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
            "DATABASE_URL": subprocess_database_url(), **extra}


@pytest.mark.django_db(transaction=True)
def test_the_procfile_release_and_web_commands_run(production_env):
    processes = _procfile()
    assert set(processes) == {"release", "web", "worker"}
    port = _free_port()
    env = _procfile_env(production_env, PORT=str(port))

    release = subprocess.run(["sh", "-c", processes["release"]], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert release.returncode == 0, release.stdout + release.stderr
    assert "schedule(s) in place" in release.stdout

    web = subprocess.Popen(["sh", "-c", processes["web"]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and web.poll() is None and status is None:
            try:
                status = _get(f"http://127.0.0.1:{port}/healthz")[0]
            except OSError:
                time.sleep(0.5)
        assert status == 200, web.stdout.read().decode() if web.poll() is not None else status
    finally:
        _stop_group(web)


@pytest.mark.django_db(transaction=True)
def test_the_procfile_worker_starts_the_job_cluster(production_env):
    worker = subprocess.Popen(["sh", "-c", _procfile()["worker"]], cwd=ROOT, env=_procfile_env(production_env),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # qcluster forks its sentinel, monitor, pusher and workers once it runs.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None and len(descendants(worker.pid)) < 3:
            time.sleep(0.5)
        running = worker.poll() is None and len(descendants(worker.pid)) >= 3
    finally:
        _stop_group(worker)
    output = worker.stdout.read().decode()
    assert running, output
    assert "secrets ok" in output


def test_the_nginx_example_is_valid_nginx(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=hub.example.com", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/hub.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
    site = site.replace("/etc/letsencrypt/live/hub.example.com/privkey.pem", str(tmp_path / "key.pem"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n include {tmp_path}/site.conf;\n}}\n")

    result = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "X-Forwarded-Proto https" in site


def test_make_run_writes_a_development_env_once_and_the_readme_commands_then_work(tmp_path, production_env):
    # A copy of the checkout's skeleton, so the real .env (if any) is not touched.
    (tmp_path / "bin").mkdir()
    shutil.copy(ROOT / "bin" / "run", tmp_path / "bin" / "run")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in production_env.items() if not k.startswith(("DJANGO_", "HUB_"))}

    first = subprocess.run([str(tmp_path / "bin" / "run"), "--env-only"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    written = (tmp_path / ".env").read_text()
    values = dict(line.split("=", 1) for line in written.splitlines() if line and not line.startswith("#"))
    assert values["DJANGO_DEBUG"] == "1" and values["HUB_SANDBOX"] == "1"
    assert len(values["DJANGO_SECRET_KEY"]) >= 50
    Fernet(values["HUB_ENCRYPTION_KEYS"].encode())  # a valid Fernet key
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0  # secrets: readable by its owner only

    second = subprocess.run([str(tmp_path / "bin" / "run"), "--env-only"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and (tmp_path / ".env").read_text() == written  # never overwritten
    assert not list(tmp_path.glob(".env.*"))

    # The README's commands read that file: no missing setting, and the sandbox's command exists.
    command = manage("vtex_sandbox", "--help", env={**env, "DJANGO_ENV_FILE": str(tmp_path / ".env")})
    assert command.returncode == 0, command.stderr
