"""Gateway configuration (UPSELL_GATEWAY_*), next to the service's own Settings, which give the broker,
its security settings and the topic names."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UPSELL_GATEWAY_", env_file=".env", extra="ignore")

    secret: SecretStr | None = Field(
        default=None,
        description="shared secret the product's backend signs user tokens with (at least 32 bytes)",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated origins allowed to call the gateway from a browser (exact match)",
    )
    rebuild_window_s: int = Field(
        default=7 * 86_400,
        ge=0,
        description="on start, prompts are read back from the topic from now minus this (the rules' "
        "prompt_expiry: older prompts have expired)",
    )
    max_pending_per_account: int = Field(default=50, ge=1)
    max_pending_total: int = Field(default=1_000_000, ge=1)
    max_streams: int = Field(default=20_000, ge=1, description="open streams per process; beyond: 503")
    heartbeat_s: float = Field(default=15.0, gt=0, description="SSE comment sent on an idle stream")
    feedback_rate: float = Field(default=5.0, gt=0, description="feedback requests per user per second")
    feedback_burst: int = Field(default=20, ge=1)
    demo: bool = Field(
        default=False,
        description="serve /demo with tokens minted for any account: for the embedded run, never production",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip().rstrip("/") for o in v.split(",") if o.strip()]
        return v

    def secret_bytes(self) -> bytes:
        if self.secret is None:
            raise ValueError(
                "UPSELL_GATEWAY_SECRET is not set: set it to the secret your backend signs user tokens with "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        raw = self.secret.get_secret_value().encode()
        if len(raw) < 32:
            raise ValueError(f"UPSELL_GATEWAY_SECRET is {len(raw)} bytes: use at least 32 random bytes")
        return raw
