"""Service configuration: environment variables (UPSELL_*) and/or a .env file, validated by pydantic.

KAFKA_BOOTSTRAP_SERVERS is also read without the prefix, as most Kafka tooling does. With no bootstrap
servers, `run` uses the embedded runtime (no Kafka).
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    NonNegativeInt,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_COUNT: TypeAdapter[int] = TypeAdapter(NonNegativeInt)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UPSELL_", env_file=".env", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("UPSELL_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_connect_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="at start, how long to wait for the broker to answer before giving up with an error",
    )
    app_id: str = "upsell-triggers"
    topic_events: str = "usage-events"
    topic_feedback: str = "prompt-feedback"
    topic_prompts: str = "upgrade-prompts"
    topic_leads: str = Field(
        default="expansion-leads",
        description="expansion leads for sales and customer success (docs/leads.md)",
    )
    topic_dlq: str = "usage-events.dlq"
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    rules_dir: str = "rules"
    store: str = Field(default="memory://", description="memory:// (tests) or rocksdb:// (production)")
    data_dir: str = "/tmp/upsell-triggers"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    max_future_skew_s: int = Field(default=3600, ge=0)
    reload_debounce_ms: int = Field(default=500, ge=0)
    watch_rules: bool = Field(
        default=True, description="reload rules when files change; with false only on SIGHUP"
    )
    embedded_max_accounts: int = Field(
        default=2_000_000,
        ge=1,
        description="embedded run: account states held; at the bound the stalest goes",
    )
    state_retention_days: float = Field(
        default=400,
        gt=0,
        description="an account whose newest event is this much older (event time) than the newest event of "
        "its partition is removed from the store, with a changelog tombstone; it starts afresh if it returns",
    )
    erasure_hold_days: float = Field(
        default=7,
        gt=0,
        description="a deleted account (account_deleted) leaves a marker holding its id and the deletion's "
        "time, which drops its events still in flight; the marker is removed (changelog tombstone) this "
        "long in event time after the deletion (at most the retention)",
    )
    embedded_account_ttl_days: float = Field(
        default=90, gt=0, description="embedded run: an account idle this long in event time is dropped"
    )
    state_cache_accounts: int | Literal["auto"] = Field(  # at least 0: _count_or_auto checks it
        default="auto",
        description="decoded account states kept in memory per worker (~0.6-4 KiB each), unwritten ones "
        "included; beyond it the longest-decoded written ones are evicted (held compressed, decoded "
        "again when next used). auto: 100000, or 20000 when the rules keep per-account histories "
        "(forecast, distinct-count or gauge growth conditions), whose states take twice the memory",
    )
    state_idle_s: float = Field(
        default=30,
        ge=0,
        description="a decoded account state not changed for this long (seconds) is held as bytes (its "
        "changelog record, compressed) until its next event, which decodes it again: memory follows the "
        "accounts active in the last 2 x this; 0 = only state_cache_accounts evicts (every account of "
        "the worker's partitions stays decoded up to it)",
    )
    state_unwritten_accounts: int = Field(
        default=100_000,
        ge=1,
        description="account states changed but not yet written (changelog), kept decoded: while a worker "
        "is behind, states are written at each commit, or at the latest when this many are unwritten",
    )
    state_write_version: int = Field(
        default=6,
        ge=3,
        le=6,
        description="account state format written: during a rolling upgrade from a release before state "
        "version 6, the newest version its workers read (5 from 0.1.0; 4 and 3 from older builds), then 6; "
        "all are read",
    )
    commit_interval_s: float = Field(
        default=2.8,
        gt=0,
        description="Kafka offset commit interval; while a worker is behind, account states are written "
        "(store + changelog) at each commit instead of every 50 ms",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once: each batch's prompts, dead letters, changelog records and input offsets "
        "are one Kafka transaction per partition (consumers of the output topics read with "
        "isolation.level=read_committed); needs the memory store",
    )
    transaction_retry_backoff_ms: float = Field(
        default=2.0,
        gt=0,
        le=1000,
        description="exactly_once: how long the worker's transactional producer waits before asking again "
        "to start a transaction the broker refused because it still writes the previous one's commit "
        "markers (aiokafka's own wait is 20 ms)",
    )
    fetch_partition_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="most bytes fetched per partition per request (handled in batches of max_batch_records)",
    )
    max_batch_records: int = Field(
        default=20_000,
        ge=1,
        description="most records handed to the handler at once (while behind, a fetch is split into "
        "batches of this many): bounds the memory of a batch in flight",
    )
    memory_release_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="when caught up after handling records, give freed memory back to the OS (glibc "
        "malloc_trim, in a thread), at most once per this many seconds; 0 = never",
    )
    session_timeout_s: float = Field(
        default=15.0,
        ge=6,
        description="consumer-group session timeout: how long a crashed worker's partitions wait before "
        "another worker takes them (Faust's default is 60 s)",
    )
    stall_s: float = Field(
        default=120,
        ge=0,
        description="the stall watchdog: /healthz answers 503 (and the liveness probe restarts the worker) "
        "when an assigned input partition had records waiting and none was consumed for this long, or a "
        "recovery read no changelog record for this long, while the broker answered; 0 = off",
    )
    batch_timings_file: str | None = Field(
        default=None,
        description="append one JSON line per batch (fetch wait, apply, delivery, state write, commit) "
        "and per group assignment, commit, fetch request and collector pause to this file; for "
        "diagnosing latency",
    )

    # Kafka security (aiokafka semantics)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://")):
            raise ValueError("use memory:// or rocksdb:// (docs/operations.md)")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """DEBUG as well as debug, as logging's own level names are written."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("state_cache_accounts", mode="before")
    @classmethod
    def _count_or_auto(cls, value: object) -> object:
        """The word auto in any case, or what pydantic reads as an int of 0 or more (as it did before auto:
        "20_000", "+5"): one message for anything else, where the union would report two."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            return _COUNT.validate_python(value)
        except ValidationError:
            raise ValueError("give a number of accounts (0 or more), or auto") from None

    @model_validator(mode="after")
    def _exactly_once_store(self) -> Settings:
        """A RocksDB partition is written before its transaction commits and is not rebuilt after a
        crash, so it could keep a state whose transaction was aborted: exactly_once needs the memory
        store, which is recovered from the (read_committed) changelog at every start."""
        if self.processing_guarantee == "exactly_once" and not self.store.startswith("memory"):
            raise ValueError(
                "UPSELL_PROCESSING_GUARANTEE=exactly_once needs the memory store (UPSELL_STORE=memory://): "
                "a RocksDB store can keep the state of an aborted transaction after a crash"
            )
        return self
