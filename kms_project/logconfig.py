"""How every KCM process logs (gunicorn's master and workers, Celery, beat, manage.py): to stderr,
one JSON object per line, or readable text for development.

    KCM_LOG_FORMAT   json | text (default: text when KCM_ENV=development, json otherwise)
    KCM_LOG_LEVEL    the root level (default INFO)

Each JSON line has `time` (UTC, ISO 8601), `level`, `logger`, `process` and `message`, and,
inside a request or a task a request queued, `request_id`, `tenant` and `principal`
(apps.core.logcontext); the line that sums up a request adds `method`, `route` (the URL
pattern's name), `status` and `duration_ms`, and task lines add `task` and `task_id`.

python-json-logger, not structlog: every line here comes from the standard library's logging
(Django, gunicorn, Celery, our modules), and a formatter is all that it needs.
Settings use `from_env()` (Django calls `configure`); gunicorn_conf.py passes the same
dictionary to gunicorn's master, which never loads Django.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from kms_project.env import env_choice, env_str

FORMATS = ("json", "text")
_CONTEXT = ("request_id", "tenant", "principal", "task", "task_id")


def log_format() -> str:
    environment = env_choice("KCM_ENV", ("development", "production", "test"), "development")
    return env_choice("KCM_LOG_FORMAT", FORMATS, "text" if environment == "development" else "json")


def from_env() -> dict[str, Any]:
    return logging_config(log_format(), env_str("KCM_LOG_LEVEL", "INFO").upper())


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dictionary."""
    formatters: dict[str, dict[str, Any]] = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
        "text": {
            "()": "kms_project.logconfig.TextFormatter",
            "fmt": "%(asctime)s %(levelname)s %(process)d %(name)s%(context)s %(message)s",
        },
    }
    # Everything goes to the root's one handler: other loggers only set levels.
    passed_on = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "apps.core.logcontext.ContextFilter"}},
        "formatters": {log_format: formatters[log_format]},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # Django's and gunicorn's own handlers write text: replaced by the root's.
            "django": {**passed_on, "level": "INFO"},
            "django.server": passed_on,
            "gunicorn.error": passed_on,
            # gunicorn's access lines name raw paths (ids, query strings): the request line of
            # apps.core.middleware says what they would, by route.
            "gunicorn.access": {**passed_on, "level": "WARNING"},
            # 4xx warnings repeat the request line with the raw path; errors keep tracebacks.
            "django.request": {**passed_on, "level": "ERROR"},
            # Never below WARNING, whatever KCM_LOG_LEVEL says: with KCM_DEBUG these print
            # every SQL statement with its parameters.
            "django.db.backends": {**passed_on, "level": "WARNING"},
        },
    }


def configure(config: dict[str, Any]) -> None:
    """Django's LOGGING_CONFIG: the dictionary, plus Python's warnings as log lines (Celery
    warns through them, and a warning on stderr would be the one line that is not JSON)."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


class TextFormatter(logging.Formatter):
    """The classic line with the context it was written in (`%(context)s`: " [request_id
    tenant principal]", or nothing)."""

    def format(self, record: logging.LogRecord) -> str:
        found = [str(getattr(record, name)) for name in _CONTEXT if getattr(record, name, "")]
        record.context = f" [{' '.join(found)}]" if found else ""
        return super().format(record)
