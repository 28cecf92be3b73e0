"""Configuration of the account service (environment variables, local defaults)."""

from __future__ import annotations

from shared.settings import PG_DEFAULT, CommonSettings


class Settings(CommonSettings):
    account_database_url: str = f"{PG_DEFAULT}/multicompte_account"
    account_port: int = 8002
    # The relay: events per JetStream batch, and the poll that backs up LISTEN/NOTIFY.
    account_relay_batch_size: int = 500
    account_relay_poll_seconds: float = 1.0
    account_pool_size: int = 10

    @property
    def port(self) -> int:
        return self.account_port
