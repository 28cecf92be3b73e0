"""The README keeps up with the code: every setting documented, the links and
commands it promises exist."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from deploy import dev

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("module", ["identity_service.settings", "account_service.settings",
                                    "licensing_consumer.settings"])
def test_every_setting_is_documented_with_its_default(module):
    try:
        settings = importlib.import_module(module).Settings
    except ModuleNotFoundError:
        pytest.skip(f"{module} not built yet")
    rows = {line.split("`")[1]: line for line in README.splitlines() if line.startswith("| `")}
    for name, field in settings.model_fields.items():
        var = name.upper()
        assert var in rows, f"document {var} (default {field.default!r}) in README.md's configuration tables"
        if field.default is None:
            assert "unset" in rows[var], f"README.md should say {var} is unset by default"
            continue
        default = str(field.default).lower() if isinstance(field.default, bool) else str(field.default)
        assert f"`{default}`" in rows[var], f"README.md gives {var} another default than {default!r}"


def test_the_launcher_variables_are_documented():
    for var in (dev.DATA_DIR_VAR, dev.NATS_PORT_VAR, dev.READY_TIMEOUT_VAR):
        assert f"`{var}`" in README
    assert f"`{dev.DEFAULT_EMBEDDED_NATS_PORT}`" in README


def test_the_readme_promises_what_exists():
    for path in ("deploy/Dockerfile", "docker-compose.yml", "deploy/nats.conf", "tests/infra.py",
                 "shared/events.py"):
        assert (ROOT / path).exists(), path
    assert "make run" in README and "make test" in README
    assert "<!-- curl-session" in README
    makefile = (ROOT / "Makefile").read_text()
    assert "python -m deploy.dev" in README or "-m deploy.dev" in makefile
