"""Logging: one line per event on stderr, as text or JSON; engine chatter held at its own level."""

from __future__ import annotations

import json
import logging
import sys
import time

ENGINE_LOGGERS = ("neonize", "whatsmeow", "Whatsmeow", "hypercorn.error")
# Text-only service: the missing-ffmpeg warning at every connect is noise.
QUIET_LOGGERS = ("neonize.utils.ffmpeg",)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str, engine_level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    # force: neonize calls basicConfig() at import and would otherwise print everything twice.
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in ENGINE_LOGGERS:
        logging.getLogger(name).setLevel(engine_level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
