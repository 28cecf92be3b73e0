"""Configuration shared by every service (pydantic-settings, env vars).

Each service's own `settings.py` subclasses `CommonSettings` with its database
URL and port. Every variable has a working local default.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_subject_prefix: str = "accounts"
    nats_stream: str = "ACCOUNTS"
    # Where services find the identity service; also the `iss` of its tokens.
    identity_url: str = "http://127.0.0.1:8001"
    # The `aud` of access tokens: the multicompte API.
    token_audience: str = "multicompte"
    log_level: str = "info"

    @property
    def issuer(self) -> str:
        return self.identity_url.rstrip("/")

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"
