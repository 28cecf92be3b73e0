"""`make run`'s decisions, from the environment alone (no process started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import dev, healthcheck

ALL = lambda module: True  # noqa: E731 - every service module exists


def test_defaults_start_everything_embedded_on_the_contract_ports():
    plan = dev.make_plan({}, exists=ALL)
    assert plan.ports == {"identity": 8001, "account": 8002, "licensing": 8003}
    assert plan.host == "127.0.0.1"
    assert plan.embedded_postgres and plan.embedded_nats
    assert plan.nats_port == dev.DEFAULT_EMBEDDED_NATS_PORT != 4222  # never collides with a NATS you run
    assert plan.data_dir == (dev.ROOT / ".data").resolve()
    assert [s.module for s in plan.services] == ["identity_service", "account_service", "licensing_consumer"]


def test_ports_and_data_folder_come_from_the_environment(tmp_path):
    env = {"IDENTITY_PORT": "9001", "ACCOUNT_PORT": "9002", "LICENSING_PORT": "9003",
           dev.NATS_PORT_VAR: "9222", dev.DATA_DIR_VAR: str(tmp_path / "d"), "HOST": "0.0.0.0"}
    plan = dev.make_plan(env, exists=ALL)
    assert plan.ports == {"identity": 9001, "account": 9002, "licensing": 9003}
    assert plan.nats_port == 9222 and plan.data_dir == tmp_path / "d" and plan.host == "0.0.0.0"
    assert sorted(p for p, _ in plan.needed_ports()) == [9001, 9002, 9003, 9222]


def test_given_servers_replace_the_embedded_ones():
    env = {"IDENTITY_DATABASE_URL": "postgresql://x/i", "ACCOUNT_DATABASE_URL": "postgresql://x/a",
           "LICENSING_DATABASE_URL": "postgresql://x/l", "NATS_URL": "nats://n:4222"}
    plan = dev.make_plan(env, exists=ALL)
    assert not plan.embedded_postgres and not plan.embedded_nats
    assert plan.nats_port is None and len(plan.needed_ports()) == 3


def test_one_missing_database_url_still_needs_the_embedded_server():
    plan = dev.make_plan({"IDENTITY_DATABASE_URL": "postgresql://x/i"}, exists=ALL)
    assert plan.embedded_postgres and plan.external_db_urls == {"IDENTITY_DATABASE_URL": "postgresql://x/i"}


def test_services_not_built_yet_are_skipped_not_fatal():
    plan = dev.make_plan({}, exists=lambda m: m == "identity_service")
    assert [s.name for s in plan.services] == ["identity"]
    assert [s.name for s in plan.missing] == ["account", "licensing"]
    assert [p for p, _ in plan.needed_ports()] == [8001, dev.DEFAULT_EMBEDDED_NATS_PORT]


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_a_bad_port_is_a_clear_error(value):
    with pytest.raises(dev.ConfigError, match="ACCOUNT_PORT"):
        dev.make_plan({"ACCOUNT_PORT": value}, exists=ALL)


def test_taken_ports_names_the_port_and_its_variable():
    plan = dev.make_plan({}, exists=ALL)
    taken = dev.taken_ports(plan, is_free=lambda port, host: port != 8002)
    assert taken == [(8002, "ACCOUNT_PORT, the account service")]


def test_the_same_port_given_twice_is_reported():
    plan = dev.make_plan({"LICENSING_PORT": "8001"}, exists=ALL)
    taken = dev.taken_ports(plan, is_free=lambda port, host: True)
    assert [p for p, _ in taken] == [8001] and "LICENSING_PORT" in taken[0][1]


def test_each_service_gets_its_own_database_and_the_shared_wiring():
    plan = dev.make_plan({"IDENTITY_PORT": "9101", "HOST": "0.0.0.0"}, exists=ALL)
    account = next(s for s in plan.services if s.name == "account")
    env = dev.service_env(plan, account, {"PATH": "/bin", "NATS_STREAM": "MINE"},
                          db_urls={"ACCOUNT_DATABASE_URL": "postgresql://h/multicompte_account"},
                          nats_url="nats://127.0.0.1:14222")
    assert env["ACCOUNT_DATABASE_URL"] == "postgresql://h/multicompte_account"
    assert "IDENTITY_DATABASE_URL" not in env
    assert env["NATS_URL"] == "nats://127.0.0.1:14222"
    assert env["IDENTITY_URL"] == "http://127.0.0.1:9101"  # reachable even when binding 0.0.0.0
    assert env["HOST"] == "0.0.0.0" and env["ACCOUNT_PORT"] == "8002" and env["IDENTITY_PORT"] == "9101"
    assert env["NATS_STREAM"] == "MINE" and env["NATS_SUBJECT_PREFIX"] == "accounts"
    assert env["PATH"] == "/bin"


def test_an_explicit_identity_url_is_kept():
    plan = dev.make_plan({}, exists=ALL)
    identity = plan.services[0]
    env = dev.service_env(plan, identity, {"IDENTITY_URL": "https://id.example.com"}, db_urls={}, nats_url="n")
    assert env["IDENTITY_URL"] == "https://id.example.com"


def test_a_taken_port_stops_main_before_anything_starts(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {"ACCOUNT_PORT": str(port), dev.DATA_DIR_VAR: str(tmp_path / "data")} | _free_ports_env()
        code = dev.main([], env=env)
    out = capsys.readouterr().out
    assert code == 2
    assert f"port {port} is already in use (ACCOUNT_PORT" in out and "nothing was started" in out
    assert not (tmp_path / "data").exists()


def _free_ports_env() -> dict[str, str]:
    from deploy.embedded import free_port

    return {"IDENTITY_PORT": str(free_port()), "LICENSING_PORT": str(free_port()),
            dev.NATS_PORT_VAR: str(free_port())}


def test_healthcheck_cli(capsys):
    assert healthcheck.main(["not-a-port"]) == 2
    from deploy.embedded import free_port

    assert healthcheck.main([str(free_port())]) == 1  # nothing listens


def test_the_data_folder_is_ignored_by_git():
    ignored = Path(dev.ROOT / ".gitignore").read_text().split()
    assert ".data/" in ignored
