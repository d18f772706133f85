"""Start-up checks: every mistake a user can make when starting a command becomes one line that says
what is wrong and how to fix it (cli.main prints it and exits), never a traceback.

Exit codes: 2 for usage (an option, setting or path the user gave is wrong), 1 for an environment that
refuses (port in use, broker unreachable, rule files with errors).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

if TYPE_CHECKING:
    from upsell_triggers.engine.ruleset import RuleSet
    from upsell_triggers.settings import Settings

USAGE = 2
ENVIRONMENT = 1


class StartupError(Exception):
    """A start-up mistake, worded for the user. `lines` beyond the first carry detail (rule errors)."""

    def __init__(self, message: str, code: int = USAGE, detail: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail or []


def load_settings(flags: dict[str, tuple[str, Any]]) -> Settings:
    """Settings from the environment/.env, with command-line overrides: field -> (flag, value).

    A bad value names where it came from: the flag, or the UPSELL_* variable (environment or .env)."""
    from upsell_triggers.settings import Settings

    return validated_settings(Settings, flags)


_S = TypeVar("_S", bound=BaseSettings)


def validated_settings(model: type[_S], flags: dict[str, tuple[str, Any]] | None = None) -> _S:
    """Any settings model (its env_prefix names the variables), with command-line overrides."""
    flags = flags or {}
    prefix = str(model.model_config.get("env_prefix") or "")
    overrides = {field: value for field, (_, value) in flags.items() if value is not None}
    try:
        return model(**overrides)
    except ValidationError as err:
        e = err.errors(include_url=False)[0]
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a check across settings (model_validator): its message names them
            raise StartupError(
                f"settings: {msg}; fix it in the environment or in .env (settings: docs/configuration.md)"
            ) from None
        field = str(e["loc"][0])
        shown = repr(e["input"]) if not isinstance(e["input"], dict) else ""
        if field in overrides:
            raise StartupError(f"{flags[field][0]} {shown}: {msg}") from None
        env = "KAFKA_BOOTSTRAP_SERVERS" if field == "kafka_bootstrap_servers" else f"{prefix}{field.upper()}"
        more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
        raise StartupError(
            f"setting {env}={shown}: {msg}{more}; fix it in the environment or in .env "
            f"(settings: docs/configuration.md)"
        ) from None


RUN_RULES = "pass --rules DIR or set UPSELL_RULES_DIR"  # `run`: the only command that reads the setting


def rules_dir(path: str, how: str = "pass --rules DIR") -> Path:
    """The rules directory, or an error naming the absolute path that is missing and `how` the command
    takes another."""
    p = Path(path)
    if p.is_dir():
        return p
    where = p.resolve()
    what = "is not a directory" if p.exists() else "does not exist"
    raise StartupError(
        f"rules directory {where} {what}: {how} (the repository's rules/ is a working example)"
    )


def load_rules(path: str, how: str = "pass --rules DIR") -> RuleSet:
    """Loads the rule set; rule-file errors are reported all at once (file:line, rule id)."""
    from upsell_triggers.engine.ruleset import RulesError, load_ruleset

    d = rules_dir(path, how)
    try:
        return load_ruleset(d)
    except RulesError as err:
        raise StartupError(
            f"rules in {d} do not load ({len(err.problems)} error(s)); `upsell-triggers rules check "
            f"{path}` lists them",
            ENVIRONMENT,
            [str(p) for p in err.problems],
        ) from None


def readable_file(path: str | None, what: str) -> None:
    """`-` (stdin) or a file this process can open for reading."""
    if path is None or path == "-":
        return
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        raise StartupError(f"{what} {path} is a directory; give a file (JSON lines) or - for stdin") from None
    except OSError as err:
        raise StartupError(f"cannot read {what} {path}: {err.strerror or err}") from None


def writable_file(path: str | None, what: str) -> None:
    if path is None:
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise StartupError(f"cannot write {what} {path}: directory {parent} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise StartupError(f"cannot write {what} {path}: permission denied")


def port_free(host: str, port: int, flags: bool = True, env: str = "UPSELL_HTTP_") -> None:
    """The HTTP port can be bound (the servers bind with SO_REUSEADDR, as this check does, so a port
    in TIME_WAIT is not reported). A race with another process remains possible; this catches the
    common case (a second instance, another service on 8080) before anything starts. The message
    names how to choose another: the command's --host/--port (`flags`) and the settings' `env` prefix
    (UPSELL_GATEWAY_ for the gateway, which `run --demo` starts without flags of its own)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise StartupError(
            f"HTTP host {host!r} does not resolve ({err.strerror}): {'pass --host or ' if flags else ''}"
            f"set {env}HOST"
        ) from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is already in use (another upsell-triggers?): "
                    f"{'pass --port N or ' if flags else ''}set {env}PORT",
                    ENVIRONMENT,
                ) from None
            raise StartupError(
                f"cannot listen on {host}:{port} ({err.strerror}): "
                f"{'pass --host/--port or ' if flags else ''}set {env}HOST/{env}PORT",
                ENVIRONMENT,
            ) from None


def broker_reachable(settings: Settings) -> None:
    """Creates the topics (what the worker does first) within settings.kafka_connect_timeout_s: a broker
    that refuses or never answers is one line, not a hang or an aiokafka traceback."""
    from upsell_triggers.runtime.kafka.topics import ensure_topics

    _bounded(settings, ensure_topics(settings), "or run without Kafka: upsell-triggers run --embedded")


def broker_answers(settings: Settings, options: dict[str, Any]) -> None:
    """The broker answers a metadata request (aiokafka client `options`), within the same bound: for
    commands that read topics but do not create them (the gateway)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(**options)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    _bounded(settings, probe(), "")


def _bounded(settings: Settings, probe: Coroutine[Any, Any, None], alternative: str) -> None:
    from aiokafka.errors import KafkaConnectionError, KafkaError

    timeout = settings.kafka_connect_timeout_s
    servers = settings.kafka_bootstrap_servers
    fix = (
        "check KAFKA_BOOTSTRAP_SERVERS (and UPSELL_SECURITY_PROTOCOL / UPSELL_SASL_* for a secured "
        f"cluster){', ' + alternative if alternative else ''}"
    )
    # aiokafka logs each failed connection attempt and then raises a bare "Unable to bootstrap": the
    # attempts are kept (not printed) so the one line can name a refusal such as a wrong password.
    quiet = logging.getLogger("aiokafka")
    attempts = _RefusalCollector()
    level, propagate = quiet.level, quiet.propagate
    quiet.setLevel(logging.ERROR)
    quiet.propagate = False
    quiet.addHandler(attempts)
    try:
        asyncio.run(asyncio.wait_for(probe, timeout))
    except TimeoutError:
        raise StartupError(
            f"Kafka at {servers} did not answer within {timeout:g}s: {fix}", ENVIRONMENT
        ) from None
    except KafkaConnectionError:
        if attempts.refusal is not None:
            raise StartupError(
                f"Kafka at {servers} refused the credentials ({attempts.refusal}): check "
                "UPSELL_SASL_MECHANISM, UPSELL_SASL_USERNAME and UPSELL_SASL_PASSWORD",
                ENVIRONMENT,
            ) from None
        raise StartupError(f"cannot connect to Kafka at {servers}: {fix}", ENVIRONMENT) from None
    except KafkaError as err:
        raise StartupError(
            f"Kafka at {servers} refused: {type(err).__name__} {err}: {fix}", ENVIRONMENT
        ) from None
    except SystemExit as exc:  # ensure_topics' own one-line refusals (partition counts, topic creation)
        raise StartupError(str(exc.code), ENVIRONMENT) from None
    except OSError as err:  # SSL files, DNS
        raise StartupError(f"cannot connect to Kafka at {servers} ({err}): {fix}", ENVIRONMENT) from None
    finally:
        quiet.removeHandler(attempts)
        quiet.setLevel(level)
        quiet.propagate = propagate


class _RefusalCollector(logging.Handler):
    """Keeps the first authentication refusal among aiokafka's logged connection attempts (the
    exception is an argument of its log record, never re-raised to the caller)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.refusal: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        from aiokafka.errors import (
            AuthenticationFailedError,
            IllegalSaslStateError,
            SaslAuthenticationFailed,
            UnsupportedSaslMechanismError,
        )

        refused = (
            AuthenticationFailedError,
            SaslAuthenticationFailed,
            IllegalSaslStateError,
            UnsupportedSaslMechanismError,
        )
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if self.refusal is None and isinstance(arg, refused):
                self.refusal = f"authentication failed: {type(arg).__name__}"
