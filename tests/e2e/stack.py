"""The whole product as a user runs it: `python -m identity_service`,
`python -m account_service` and `python -m licensing_consumer` as separate
processes on free loopback ports, each with its own database, sharing one
NATS stream and subject prefix of their own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]

PASSWORD = "correct horse battery"


@dataclass
class Service:
    module: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=1.0)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as e:
                last = str(e)
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout}s ({last}):\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@dataclass
class Stack:
    identity: Service
    account: Service
    licensing: Service
    databases: dict[str, str]
    _tmp: tempfile.TemporaryDirectory = field(repr=False, default=None)

    @property
    def services(self) -> list[Service]:
        return [self.identity, self.account, self.licensing]

    def stop(self) -> None:
        for s in reversed(self.services):
            s.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def start_stack(new_database, nats_names, *, identity_env: dict[str, str] | None = None) -> Stack:
    """Start the three processes and wait until each is ready (its database and NATS reachable)."""
    tmp = tempfile.TemporaryDirectory(prefix="mc-e2e-")
    ports = {"identity": free_port(), "account": free_port(), "licensing": free_port()}
    dbs = {name: new_database(name) for name in ports}
    common = {
        **os.environ,
        "HOST": "127.0.0.1",
        "NATS_URL": nats_names.url,
        "NATS_STREAM": nats_names.stream,
        "NATS_SUBJECT_PREFIX": nats_names.prefix,
        "IDENTITY_URL": f"http://127.0.0.1:{ports['identity']}",
        "LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    services = {}
    for name, module in (("identity", "identity_service"), ("account", "account_service"),
                         ("licensing", "licensing_consumer")):
        env = {**common, f"{name.upper()}_DATABASE_URL": dbs[name], f"{name.upper()}_PORT": str(ports[name])}
        if name == "identity" and identity_env:
            env.update(identity_env)
        services[name] = Service(module, ports[name], env, Path(tmp.name) / f"{name}.log")
    stack = Stack(services["identity"], services["account"], services["licensing"], dbs, tmp)
    try:
        for s in stack.services:
            s.start()
        for s in stack.services:
            s.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def running_stack(new_database, nats_names, *, identity_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`start_stack`, then on the way out: stop the processes, print their logs
    (pytest shows them only when the test failed) and drop the revocation bucket."""
    s = start_stack(new_database, nats_names, identity_env=identity_env)
    try:
        yield s
    finally:
        s.stop()
        for svc in s.services:
            print(f"----- {svc.module} log -----\n{svc.log()}")
        asyncio.run(drop_revocation_bucket(nats_names))


async def drop_revocation_bucket(names) -> None:
    """The services' revocation bucket is a stream of its own, outside the test's stream
    (which the `nats_names` fixture deletes)."""
    import nats

    from shared.revocations import revocation_bucket

    try:
        nc = await nats.connect(names.url, connect_timeout=2, max_reconnect_attempts=1)
    except Exception:  # noqa: BLE001 - the server may be gone in a failure test
        return
    try:
        await nc.jetstream().delete_key_value(revocation_bucket(names.stream))
    except Exception:  # noqa: BLE001 - never created, or already gone
        pass
    finally:
        await nc.close()
