"""Configuration of the licensing consumer (environment variables, local defaults)."""

from __future__ import annotations

from shared.settings import PG_DEFAULT, CommonSettings


class Settings(CommonSettings):
    licensing_database_url: str = f"{PG_DEFAULT}/multicompte_licensing"
    licensing_port: int = 8003
    # The durable JetStream consumer's name (one per read model sharing a stream).
    licensing_durable: str = "licensing"

    @property
    def port(self) -> int:
        return self.licensing_port
