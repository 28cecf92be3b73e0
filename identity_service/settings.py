"""Configuration of the identity service (environment variables, pydantic-settings)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from shared.settings import PG_DEFAULT, CommonSettings


class Settings(CommonSettings):
    identity_database_url: str = f"{PG_DEFAULT}/multicompte_identity"
    identity_port: int = 8001
    # uvicorn worker processes (each runs the HTTP app and a projector replica)
    identity_workers: int = Field(1, ge=1)
    # run the membership projector in this process (a replica may leave it to others)
    identity_projector: bool = True
    # only one projector at a time among workers/replicas (advisory lock, fail-over);
    # correctness does not depend on it, it spares them racing over the same messages
    identity_projector_exclusive: bool = True
    identity_pool_size: int = 10

    # when set, signing keys are stored encrypted (PKCS#8, best available) with it
    identity_key_passphrase: SecretStr | None = None

    identity_access_token_ttl_seconds: int = Field(300, ge=1, le=300)  # RFC 9068 tokens, at most 5 min
    identity_session_ttl_seconds: int = 14 * 24 * 3600
    # login throttling, per normalised email, counted in the database
    identity_login_max_failures: int = 5
    identity_login_failure_window_seconds: int = 900
    identity_login_lockout_seconds: int = 60
    # how long a switch with `min_version` may wait for the read model
    identity_switch_wait_seconds: float = 5.0
    # without `min_version`, how long a switch (exchange, login into an account) that the
    # read model would refuse waits for that account's next events before refusing: a
    # client that just created the account, or a person just added, is not refused because
    # the projection is a few milliseconds behind (only refusals of account UUIDs wait)
    identity_switch_grace_seconds: float = Field(2.0, ge=0, le=30)

    @model_validator(mode="after")
    def _issuer_where_we_listen(self) -> Settings:
        """Without IDENTITY_URL, the tokens' `iss` and the discovery document's URLs name
        this process (IDENTITY_PORT), as `python -m deploy.dev` does for the other services;
        the common default would point at port 8001 whatever port we serve on."""
        if "identity_url" not in self.model_fields_set:
            host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            self.identity_url = f"http://{host}:{self.identity_port}"
        return self

    @property
    def database_url(self) -> str:
        return self.identity_database_url

    @property
    def key_passphrase(self) -> str | None:
        return self.identity_key_passphrase.get_secret_value() if self.identity_key_passphrase else None

    @property
    def port(self) -> int:
        return self.identity_port
