"""Log lines: key=value text (the default) or one JSON object per line (LOG_FORMAT=json).

The app writes its lines as text with key=value pairs in them (`request method=POST path=/
status=303 ms=41.2 … store=101 client=… request_id=…`). As JSON each line is an object with
the time, level, logger and message, and every key=value pair of the message as a field of its
own (numbers as numbers), so a log store can filter on `store`, `outcome` or `engage` without
parsing. Nothing is added that the text line does not say: no personal data, PIN or key.
gunicorn's own lines take the same shape (serve.py hands it gunicorn_config()).

What no format here shows is not collected for every record, as the logging HOWTO's
"Optimization" section describes: the calling file and line (a walk up the stack), the thread
and the multiprocessing process name. gunicorn's own lines show the process id, so that stays.
"""

from __future__ import annotations

import logging
import re

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
PAIR = re.compile(r"(?<!\S)([a-z][a-z_]*)=(\S+)")
NUMBER = re.compile(r"-?\d+(\.\d+)?")


class KeyValueJsonFormatter(JsonFormatter):
    """One JSON object per record; the message's key=value pairs become fields."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level",
                                            "name": "logger"})  # fmt: skip
        super().__init__(*args, **kwargs)

    def add_fields(self, log_record, record, message_dict) -> None:
        super().add_fields(log_record, record, message_dict)
        for key, value in PAIR.findall(record.getMessage()):
            if key in log_record:
                continue
            if NUMBER.fullmatch(value):
                log_record[key] = float(value) if "." in value else int(value)
            else:
                log_record[key] = None if value == "-" else value


def line(name: str, message: str, log_format: str, level: int = logging.INFO, **fields) -> str:
    """One line that must be said whatever LOG_LEVEL is (the server's start-up line): as text
    it is the message itself; as JSON, a record as every other line is, with `fields`."""
    if log_format != "json":
        return message
    record = logging.LogRecord(name, level, "", 0, message, None, None)
    record.__dict__.update(fields)
    return KeyValueJsonFormatter().format(record)


def configure(level: str, log_format: str = "text", stream=None) -> None:
    """The process's log lines, to stderr (or `stream`), as text or JSON."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        KeyValueJsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def gunicorn_config(log_format: str) -> dict | None:
    """gunicorn's logconfig_dict: its error log in JSON too; None keeps gunicorn's own text."""
    if log_format != "json":
        return None
    formatter = {"()": "webapp.ops.logs.KeyValueJsonFormatter"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # gunicorn's handlers all use its "generic" formatter: the JSON one takes its place.
        "formatters": {"generic": formatter},
        "root": {"level": "INFO", "handlers": ["error_console"]},
        "loggers": {  # each line once: gunicorn's own loggers do not pass it on to the root
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "handlers": {
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "generic",
                "stream": "ext://sys.stderr",
            },  # fmt: skip
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "generic",
                "stream": "ext://sys.stderr",
            },  # fmt: skip
        },
    }
