"""Process logging that never prints a secret and masks the emails of the people in the pipeline.

    configure_logging(settings)           # once, first thing in ``handoff`` (services/cli.py main)
    log.warning("push for %s failed", "jane.doe@acme.com")
    # -> "push for j***@acme.com failed"; a configured secret value anywhere in a line -> "***"

Redaction happens when a record is created (a log record factory), so it covers every handler and
every library (httpx, aiokafka, SQLAlchemy, uvicorn): the message is rendered with its arguments,
then emails are masked and secrets replaced; an exception's traceback is rendered and redacted the
same way (SQL errors quote their parameters, which hold payloads). What counts as a secret:

- the values of the environment variables the config names (``secret_env``, ``token_env``,
  ``routing_key_env``), of every variable whose name says it holds one (``*SECRET*``, ``*TOKEN*``,
  ``*PASSWORD*``, ``*_KEY``, ...), each comma-separated part of a rotation list, and the database
  URL's password (values shorter than 6 characters are too weak to be secrets and too common to
  replace);
- whatever follows ``Bearer``/``Basic`` in a header, and the password in a ``scheme://user:pass@`` URL.

Pure helpers (:func:`mask_emails`, :func:`redact`, :func:`secret_values`) are usable on their own.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from services.config import HandoffConfig
    from services.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MIN_SECRET_LENGTH = 6
MASK = "***"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9_%+-])[A-Za-z0-9._%+-]*(@|%40)((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})\b")
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|(^|_)(API_|WRITE_|"
                          r"ROUTING_|SIGNING_|ACCESS_|CLIENT_)?KEY(S)?$", re.IGNORECASE)
_AUTH = re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=:-]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)([^\s@/]+)(@)", re.IGNORECASE)


def mask_emails(text: str) -> str:
    """``Jane.Doe@Acme.com`` -> ``J***@Acme.com`` (first character kept, the domain kept for support)."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}{MASK}{m.group(2)}{m.group(3)}", text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret value, credential and email masked."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    text = _AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    return mask_emails(text)


def secret_values(
    environ: Mapping[str, str],
    *,
    config: HandoffConfig | None = None,
    database_url: str | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """Every secret value this process may hold, longest first (so a secret containing another one is
    replaced whole)."""
    names = {name for name in environ if _SECRET_NAME.search(name)}
    if config is not None:
        for source in config.sources:
            names.update(source.secret_env_names())
        if config.crm is not None:
            names.update(n for n in (config.crm.secret_env, config.crm.token_env) if n)
        if config.alerts.pagerduty is not None and config.alerts.pagerduty.routing_key_env:
            names.add(config.alerts.pagerduty.routing_key_env)
    values = [part.strip() for name in names for part in environ.get(name, "").split(",")]
    values += list(extra)
    if database_url:
        password = _database_password(database_url)
        if password:
            values.append(password)
    found = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
    return sorted(found, key=lambda v: (-len(v), v))


def _database_password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password or None
    except Exception:  # not a URL we can parse: nothing to hide from it
        return None


class Redactor:
    """Applies :func:`redact` to a log record's message, traceback and stack (in place)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(secrets)
        self._formatter = logging.Formatter()

    def __call__(self, record: logging.LogRecord) -> logging.LogRecord:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we have rather than lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return record


class RedactingFilter(logging.Filter):
    """The same redaction as a handler filter, for handlers set up outside :func:`configure_logging`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        self.redactor(record)
        return True


_installed: dict[str, Any] = {}


def configure_logging(
    settings: Settings | None = None,
    *,
    level: str | None = None,
    environ: Mapping[str, str] | None = None,
    config: HandoffConfig | None = None,
    stream: TextIO | None = None,
    extra_secrets: Iterable[str] = (),
) -> Redactor:
    """Set up the root logger (level and format) and redact every record from now on; idempotent.

    ``settings`` gives the level, the database URL and the config path (the config, if it loads,
    names the secret variables); ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if config is None and settings is not None:
        config = _try_load_config(settings)
    secrets = secret_values(
        env, config=config, database_url=settings.database_url if settings is not None else None,
        extra=[*extra_secrets, *(settings.api_tokens() if settings is not None else [])])
    redactor = Redactor(secrets)
    _install_factory(redactor)
    root = logging.getLogger()
    chosen = (level or (settings.log_level if settings is not None else "INFO")).upper()
    root.setLevel(chosen)
    if stream is not None or not root.handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        if stream is not None:
            for old in list(root.handlers):
                if getattr(old, "_handoff", False):
                    root.removeHandler(old)
        handler._handoff = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    return redactor


def _install_factory(redactor: Redactor) -> None:
    """Wrap the record factory once; later calls only swap the redactor it uses."""
    _installed["redactor"] = redactor
    if "factory" in _installed:
        return
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        current: Redactor = _installed["redactor"]
        return current(record)

    _installed["factory"] = factory
    _installed["previous"] = previous
    logging.setLogRecordFactory(factory)


def uninstall() -> None:
    """Undo :func:`configure_logging`'s record factory and handler (tests)."""
    if "previous" in _installed and logging.getLogRecordFactory() is _installed.get("factory"):
        logging.setLogRecordFactory(_installed["previous"])
    _installed.clear()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_handoff", False):
            root.removeHandler(handler)


def _try_load_config(settings: Settings) -> HandoffConfig | None:
    try:
        from services.config import load_config

        return load_config(settings.config_path())
    except Exception:  # a broken config is reported by the command itself, not here
        return None
