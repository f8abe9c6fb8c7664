"""Process settings from the environment (prefix ``HANDOFF_``), read once per process at bootstrap.

    settings = Settings()                  # reads HANDOFF_* from the environment (and .env)
    settings.kafka_enabled                 # False: embedded in-process bus

Settings are passed to whatever needs them, never imported as a global.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./handoff.db",
        description="SQLAlchemy async URL; postgresql+asyncpg://user@host/db for production",
    )
    kafka_bootstrap: str = Field(
        default="", description="empty = embedded in-process bus; host:port[,host:port] = Kafka"
    )
    topic_prefix: str = Field(default="handoff.", description="prefix of every topic name")
    kafka_partitions: int = Field(default=6, ge=1, description="partitions per topic when created")
    kafka_replication: int = Field(default=1, ge=1, description="replication factor when creating topics")
    config: Path | None = Field(
        default=None, description="path of the YAML config; default handoff.yaml, else the packaged example"
    )
    http_host: str = Field(default="127.0.0.1", description="where the HTTP app listens")
    http_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port")
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer token(s) for /v1/leads*, /v1/reports*, /v1/reps*, /dashboard; comma-separated "
        "for rotation",
    )
    embedded_partitions: int = Field(default=4, ge=1, description="partitions of the embedded bus")
    log_level: str = Field(default="INFO", description="logging level")
    sla_tick_seconds: float = Field(default=0.25, gt=0, description="how often SLA timers are polled")
    db_upkeep_seconds: float = Field(
        default=10.0, ge=0, description="PostgreSQL with autovacuum off: how often handoff VACUUMs/ANALYZEs "
        "its own tables (0 = never; with autovacuum on it never does)",
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @property
    def kafka_enabled(self) -> bool:
        return bool(self.kafka_bootstrap)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def config_path(self) -> Path | None:
        """The YAML file to load: HANDOFF_CONFIG, else ./handoff.yaml, else None (packaged example)."""
        if self.config is not None:
            return self.config
        local = Path("handoff.yaml")
        return local if local.exists() else None

    def api_tokens(self) -> list[str]:
        if self.api_token is None:
            return []
        return [t.strip() for t in self.api_token.get_secret_value().split(",") if t.strip()]
