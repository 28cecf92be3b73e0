"""`make run` as a newcomer runs it: `python -m deploy.dev` from a clean data
folder, free ports, none of the server variables set. It must become ready,
serve register -> login -> create company -> switch, and stop on Ctrl-C
(SIGINT) within 30 s leaving no process behind; started again on the same
data folder, it still knows the user and the company. A second test gives it
servers (the suite's own) and kills a service: everything must stop, non-zero."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from deploy.dev import DATA_DIR_VAR, NATS_PORT_VAR, SERVICES, STATE_FILE, module_exists
from deploy.embedded import free_port
from tests.support.processes import alive

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVER_VARS = ("IDENTITY_DATABASE_URL", "ACCOUNT_DATABASE_URL", "LICENSING_DATABASE_URL", "NATS_URL",
               "NATS_STREAM", "NATS_SUBJECT_PREFIX", "IDENTITY_URL", "HOST")


@pytest.fixture(autouse=True)
def _every_service_exists():
    missing = [s.module for s in SERVICES if not module_exists(s.module)]
    if missing:
        pytest.skip(f"not built yet: {', '.join(missing)}")


def _readme_curl_session() -> str:
    text = (ROOT / "README.md").read_text()
    after = text.split("<!-- curl-session", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def _run_readme_session(run: DevRun) -> None:
    session = _readme_curl_session()
    for name, default in (("identity", 8001), ("account", 8002), ("licensing", 8003)):
        session = session.replace(f"http://127.0.0.1:{default}", run.url(name))
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", session], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    flat = out.stdout.replace(" ", "")
    assert '"email":"alice@example.com"' in flat, out.stdout
    assert "'role':'admin'" in flat and '"seats_used":1' in flat, out.stdout


class DevRun:
    """`python -m deploy.dev` in a subprocess, as `make run` starts it."""

    def __init__(self, tmp: Path, extra_env: dict[str, str], log_name: str = "make-run.log"):
        self.data = tmp / "data"
        self.ports = {s.name: free_port() for s in SERVICES}
        env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
        env |= {DATA_DIR_VAR: str(self.data), NATS_PORT_VAR: str(free_port()), "PYTHONUNBUFFERED": "1"}
        env |= {s.port_var: str(self.ports[s.name]) for s in SERVICES}
        env |= extra_env
        self.log_path = tmp / log_name
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "deploy.dev"], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.pids: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "multicompte is running" not in self.log:
            if self.proc.poll() is not None:
                pytest.fail(f"make run exited with {self.proc.returncode}:\n{self.log[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"make run not ready after {timeout}s:\n{self.log[-4000:]}")
            time.sleep(0.2)
        state = json.loads((self.data / STATE_FILE).read_text())
        assert state["pid"] == self.proc.pid
        self.pids = dict(state["processes"])
        try:  # every descendant too (uvicorn workers...), not only the direct children
            import psutil

            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.pids.setdefault(f"child-{child.pid}", child.pid)
        except ImportError:
            pass

    def left_behind(self) -> dict[str, int]:
        return {name: pid for name, pid in self.pids.items() if alive(pid)}

    def left_behind_after(self, timeout: float = 5.0) -> dict[str, int]:
        """What is still running once the last children had `timeout` s to be reaped."""
        deadline = time.monotonic() + timeout
        while self.left_behind() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.left_behind()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.left_behind().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_make_run_from_a_clean_state_serves_the_story_and_stops_on_ctrl_c(tmp_path):
    run = DevRun(tmp_path, {})
    try:
        run.wait_ready()
        log = run.log
        for name in ("identity", "account", "licensing"):
            assert f"==> {name:<10} ready  {run.url(name)}" in log
        assert {"postgres", "nats", "identity", "account", "licensing"} <= set(run.pids)
        assert (run.data / "pg" / "PG_VERSION").exists() and (run.data / "nats").is_dir()

        email, password = f"newcomer-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
        with httpx.Client(timeout=15) as http:
            r = http.post(f"{run.url('identity')}/users", json={"email": email, "password": password})
            assert r.status_code == 201, r.text
            r = http.post(f"{run.url('identity')}/sessions", json={"email": email, "password": password})
            assert r.status_code == 201, r.text
            session, access = r.json()["session_token"], r.json()["access_token"]
            r = http.post(f"{run.url('account')}/accounts", json={"name": "Dupont Bâtiment", "country": "fr"},
                          headers={"authorization": f"Bearer {access}"})
            assert r.status_code == 201, r.text
            account_id, version = r.json()["account_id"], r.json()["version"]
            r = http.post(f"{run.url('identity')}/sessions/current/switch",
                          json={"account_id": account_id, "min_version": version},
                          headers={"authorization": f"Bearer {session}"})
            assert r.status_code == 200, r.text
            assert r.json()["account"]["account_id"] == account_id and r.json()["account"]["role"] == "admin"
            scoped = r.json()["access_token"]
            r = http.get(f"{run.url('account')}/accounts/{account_id}", headers={"authorization": f"Bearer {scoped}"})
            assert r.status_code == 200 and r.json()["country"] == "FR", r.text
            # the licensing consumer has seen the events on the embedded NATS
            deadline = time.monotonic() + 20
            while (r := http.get(f"{run.url('licensing')}/licences/{account_id}",
                                 headers={"authorization": f"Bearer {scoped}"})).status_code != 200:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.2)
            assert r.json()["seats_used"] == 1

        # the README's copy-paste curl session, verbatim but for the ports (needs curl and bash)
        if shutil.which("curl") and shutil.which("bash"):
            _run_readme_session(run)

        run.proc.send_signal(signal.SIGINT)  # Ctrl-C

        try:
            code = run.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run still running 30 s after Ctrl-C:\n{run.log[-3000:]}")
        assert code == 0, run.log[-3000:]
        # the postmaster's last children may take a moment to be reaped
        assert run.left_behind_after(5) == {}, run.log[-3000:]
        log = run.log
        order = [log.index(f"stopped {name}") for name in ("identity", "nats", "postgres")]
        assert order == sorted(order), "services, then NATS, then PostgreSQL"
        assert not (run.data / STATE_FILE).exists()
    finally:
        run.kill()

    # the data survives: a second `make run` on the same folder knows the user and the company
    again = DevRun(tmp_path, {}, log_name="make-run-again.log")
    try:
        again.wait_ready()
        with httpx.Client(timeout=15) as http:
            r = http.post(f"{again.url('identity')}/sessions", json={"email": email, "password": password})
            assert r.status_code == 201, r.text
            assert r.json()["active_account_id"] == account_id
            r = http.get(f"{again.url('identity')}/me/accounts",
                         headers={"authorization": f"Bearer {r.json()['session_token']}"})
            assert [a["account_id"] for a in r.json()] == [account_id], r.text
        again.proc.send_signal(signal.SIGINT)
        assert again.proc.wait(30) == 0, again.log[-3000:]
    finally:
        again.kill()


def _given_servers(new_database, nats_names, label: str) -> dict[str, str]:
    """The variables that hand `make run` the suite's own PostgreSQL (a fresh database per
    service) and NATS (the test's stream and prefix) instead of embedded servers."""
    return {"IDENTITY_DATABASE_URL": new_database(f"{label}_identity"),
            "ACCOUNT_DATABASE_URL": new_database(f"{label}_account"),
            "LICENSING_DATABASE_URL": new_database(f"{label}_licensing"),
            "NATS_URL": nats_names.url, "NATS_STREAM": nats_names.stream,
            "NATS_SUBJECT_PREFIX": nats_names.prefix}


def test_given_servers_are_used_and_a_dying_service_stops_the_whole_stack(tmp_path, new_database, nats_names):
    run = DevRun(tmp_path, _given_servers(new_database, nats_names, "devrun"))
    try:
        run.wait_ready()
        assert "postgres" not in run.pids and "nats" not in run.pids, "no embedded server with given URLs"
        assert "no embedded server" in run.log
        os.kill(run.pids["account"], signal.SIGKILL)
        try:
            code = run.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run kept running after a service died:\n{run.log[-3000:]}")
        assert code != 0
        assert "account exited with code -9: stopping everything" in run.log
        assert run.left_behind_after(5) == {}
    finally:
        run.kill()


def test_sigterm_stops_the_stack_like_ctrl_c(tmp_path, new_database, nats_names):
    run = DevRun(tmp_path, _given_servers(new_database, nats_names, "devterm"))
    try:
        run.wait_ready()
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(30) == 0, run.log[-3000:]
        assert "SIGTERM received: stopping" in run.log
        assert run.left_behind_after(5) == {}
    finally:
        run.kill()
