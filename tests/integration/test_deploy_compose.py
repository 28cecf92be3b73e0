"""`docker compose up` without a Docker engine: each compose service's command
runs here with the compose file's environment, the compose hostnames
(postgres, nats, identity) mapped to loopback and the test's own database,
stream and subject prefix, and must become ready as its compose health check
sees it. The NATS configuration the compose file mounts is run for real too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from deploy.embedded import child_preexec, free_port, nats_server_binary, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("identity", "account", "licensing")


def _compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment: the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def _to_loopback(value: str, ports: dict[tuple[str, int], int]) -> str:
    """http://identity:8001 -> http://127.0.0.1:<the port identity got here>."""
    parts = urlsplit(value)
    if (parts.hostname, parts.port) in ports:
        netloc = parts.netloc.rsplit("@", 1)
        hostport = f"127.0.0.1:{ports[(parts.hostname, parts.port)]}"
        netloc = f"{netloc[0]}@{hostport}" if len(netloc) == 2 else hostport
        return urlunsplit(parts._replace(netloc=netloc))
    return value


def test_each_compose_service_command_becomes_ready_with_the_compose_environment(new_database, nats_names, tmp_path):
    services = _compose()["services"]
    port_of = {name: free_port() for name in APP_SERVICES}
    nats_url = urlsplit(nats_names.url)
    loopback = {(name, int(services[name]["ports"][0].split(":")[-1])): port for name, port in port_of.items()}
    loopback[("nats", 4222)] = nats_url.port

    envs = {}
    for name in APP_SERVICES:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
        for key, raw in services[name]["environment"].items():
            value = _interpolate(raw)
            if key.endswith("_DATABASE_URL"):
                assert urlsplit(value).hostname == "postgres"
                value = new_database(f"compose_{name}")
            elif key.endswith("_PORT"):
                value = str(port_of[key.removesuffix("_PORT").lower()])
            elif key == "NATS_STREAM":
                value = nats_names.stream
            elif key == "NATS_SUBJECT_PREFIX":
                value = nats_names.prefix
            else:
                value = _to_loopback(value, loopback)
            env[key] = value
        assert env["HOST"] == "0.0.0.0"
        assert env["IDENTITY_URL"] == f"http://127.0.0.1:{port_of['identity']}"
        envs[name] = env

    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in APP_SERVICES:  # compose's order: identity first, the others depend on it
            command = [sys.executable if c == "python" else c for c in services[name]["command"]]
            with open(tmp_path / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(
                    command, env=envs[name], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=child_preexec(),
                )
        for name in APP_SERVICES:
            check = services[name]["healthcheck"]["test"]
            assert check[0] == "CMD"
            compose_port = str(services[name]["ports"][0].split(":")[-1])
            command = [sys.executable if c == "python" else str(port_of[name]) if c == compose_port else c
                       for c in check[1:]]
            deadline = time.monotonic() + 60
            while subprocess.run(command, cwd=ROOT, env=envs[name], timeout=30).returncode != 0:
                if procs[name].poll() is not None:
                    out = (tmp_path / f"{name}.log").read_text(errors="replace")
                    pytest.fail(f"{name} exited with {procs[name].returncode}:\n{out[-3000:]}")
                assert time.monotonic() < deadline, f"{name} never became healthy"
                time.sleep(0.3)
        # what a browser on the host sees through the published ports
        with urllib.request.urlopen(f"http://127.0.0.1:{port_of['identity']}/.well-known/jwks.json", timeout=5) as r:
            assert r.status == 200
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_compose_nats_configuration_runs_jetstream_and_answers_its_health_check(tmp_path):
    conf = (ROOT / "deploy" / "nats.conf").read_text()
    client, monitor = free_port(), free_port()
    conf = (conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
                .replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{monitor}")
                .replace("store_dir: /data", f"store_dir: {tmp_path / 'js'}"))
    assert str(client) in conf and str(monitor) in conf and str(tmp_path) in conf
    (tmp_path / "nats.conf").write_text(conf)
    binary = nats_server_binary()
    assert subprocess.run([binary, "-c", str(tmp_path / "nats.conf"), "-t"], capture_output=True,
                          timeout=20).returncode == 0
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "nats.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=child_preexec())
    try:
        wait_for_port(monitor, proc=proc)
        # the compose health check's URL
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/jsz", timeout=5) as r:
            assert b'"config"' in r.read()
        assert (tmp_path / "js").exists(), "JetStream keeps its data under store_dir (the volume)"
    finally:
        proc.terminate()
        proc.wait(10)
