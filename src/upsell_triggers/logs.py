"""Structured JSON logs on stderr. No payloads or account ids are logged by default."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


QUIET = ("aiokafka", "faust", "mode")


def logging_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """dictConfig for the whole process; the Faust worker (mode) applies it instead of its own colour
    console setup, so Faust's and aiokafka's lines are JSON too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": fmt}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # aiokafka/faust debug chatter costs throughput (see README, Design): info or above.
        "loggers": {
            name: {"level": max(logging.INFO, logging.getLevelName(level.upper()))} for name in QUIET
        },
    }


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka/faust debug chatter costs throughput (see README, Design): keep them at info or above.
    for name in ("aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
