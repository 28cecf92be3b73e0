"""Configuration shared by every service (pydantic-settings, env vars).

Each service's own `settings.py` subclasses `CommonSettings` with its database
URL and port. Every variable has a working local default.
"""

from __future__ import annotations

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_subject_prefix: str = "accounts"
    nats_stream: str = "ACCOUNTS"
    # Where services find the identity service; also the `iss` of its tokens.
    # Unset, it is http://127.0.0.1:<IDENTITY_PORT>.
    identity_url: str = "http://127.0.0.1:8001"
    identity_port: int = 8001
    # The `aud` of access tokens: the multicompte API.
    token_audience: str = "multicompte"
    log_level: str = "info"

    @model_validator(mode="after")
    def _identity_where_it_listens(self) -> CommonSettings:
        """Moving the identity service with IDENTITY_PORT alone moves where the
        others look for it (an explicit IDENTITY_URL always wins)."""
        if "identity_url" not in self.model_fields_set:
            self.identity_url = f"http://127.0.0.1:{self.identity_port}"
        return self

    @property
    def issuer(self) -> str:
        return self.identity_url.rstrip("/")

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"
