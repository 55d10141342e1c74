"""One line per log record, in Lambda's JSON log format or as text for a terminal.

JSON (the default) uses the keys of Lambda's JSON log format and Powertools Logger, so the same
queries work on both: ``timestamp`` (ISO 8601, milliseconds, UTC), ``level`` (upper case),
``message``, ``logger``, ``requestId`` inside an invocation, then the record's extra fields; an
exception becomes ``errorType``, ``errorMessage`` and ``stackTrace``, as Lambda writes them.
Text puts the same on one line for a person: time, level, logger, message, ``key=value``
fields, and a stack trace on the lines below.

Fields taken from the running task's context come from :data:`CONTEXT_FIELDS`: ``requestId``
inside an invocation, and ``traceId`` inside a traced one (:mod:`streamfn.tracing` sets it only
when a tracer is on). A line pays one ``ContextVar.get`` per entry, and the hot path nothing.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
import traceback
from typing import Any

import orjson

from .dispatch import current_request_id
from .errors import ConfigError
from .tracing import current_trace_id

#: Log keys filled from context variables on every line written where they are set; another
#: integration adds its own here. A record's extra field of the same name wins.
CONTEXT_FIELDS: dict[str, contextvars.ContextVar[Any]] = {
    "requestId": current_request_id,
    "traceId": current_trace_id,
}

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}
#: Keys a record's extra fields cannot replace.
_CORE = frozenset({"timestamp", "level", "message", "logger"})


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context's fields, then the record's extras, then its exception, Lambda-style."""
    fields: dict[str, Any] = {}
    for key, var in CONTEXT_FIELDS.items():
        value = var.get(None)
        if value is not None:
            fields[key] = value
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in _CORE and not key.startswith("_"):
            fields[key] = value
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        fields["errorType"] = type(exc).__name__
        fields["errorMessage"] = str(exc)
        fields["stackTrace"] = traceback.format_tb(exc.__traceback__)
    if record.stack_info:
        fields["stackInfo"] = record.stack_info
    return fields


class JsonFormatter(logging.Formatter):
    """Lambda's JSON log format: one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        out.update(_fields(record))
        return orjson.dumps(out, default=repr).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: ``time LEVEL logger: message key=value ...``, a stack trace below."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        stack = fields.pop("stackTrace", None)
        stack_info = fields.pop("stackInfo", None)
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
            + "".join(f" {key}={_text(value)}" for key, value in fields.items())
        )
        if isinstance(stack, list) and stack:
            line += "\n" + "".join(str(frame) for frame in stack).rstrip("\n")
        if stack_info:
            line += "\n" + str(stack_info)
        return line


def _text(value: Any) -> str:
    """A field's value: a plain word as it is, anything else as JSON."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return orjson.dumps(value, default=repr).decode()


FORMATS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}


def configure(level: str = "info", fmt: str = "json") -> None:
    """Send every log line to stderr at ``level`` and above, as ``fmt`` (``json`` or
    ``text``)."""
    formatter = FORMATS.get(fmt)
    if formatter is None:
        raise ConfigError.out_of_range("log format", fmt, " or ".join(map(repr, FORMATS)))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
