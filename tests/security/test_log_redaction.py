"""The logging filter of ``services.logging_setup``: emails masked, secrets and credentials replaced, in
messages, arguments and tracebacks alike (pure helpers and the installed record factory)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.logging_setup import configure_logging, mask_emails, redact, secret_values, uninstall


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="DEBUG", stream=stream, environ={"CRM_SIGNING_SECRET": "crm-s3cret-value",
                                                              "PATH": "/usr/bin", "PD_ROUTING_KEY": "rk-12345678"},
                      extra_secrets=["api-token-abcdef"])
    try:
        yield stream
    finally:
        uninstall()


def test_emails_are_masked_keeping_the_domain() -> None:
    assert mask_emails("lead Jane.Doe@Acme.com qualified") == "lead J***@Acme.com qualified"
    assert mask_emails("a@b.co, x.y+tag@mail.example.org") == "a***@b.co, x***@mail.example.org"
    assert mask_emails("?email=jane%40acme.com") == "?email=j***%40acme.com"
    # Not emails: database URLs without a domain, Kafka ids, versions.
    for text in ("postgresql://postgres@127.0.0.1:5432/db", "user@localhost", "pkg@1.2.3", "a@b"):
        assert mask_emails(text) == text


def test_secrets_and_credentials_are_replaced() -> None:
    text = ("Authorization: Bearer tok.en-1 Basic dXNlcjo= url postgresql+asyncpg://u:pw-123456@db/x "
            "key crm-s3cret-value")
    out = redact(text, ["crm-s3cret-value"])
    assert "tok.en-1" not in out and "dXNlcjo=" not in out and "pw-123456" not in out
    assert "crm-s3cret-value" not in out and out.count("***") == 4


def test_secret_values_come_from_the_environment_config_and_database_url() -> None:
    env = {"WEBSITE_WEBHOOK_SECRET": "web-secret-1,web-secret-2", "SEGMENT_WRITE_KEY": "seg-key-123",
           "HANDOFF_API_TOKEN": "tok-abcdef", "CUSTOM_HMAC": "custom-value-1", "PATH": "/usr/local/bin",
           "SHORT_TOKEN": "abc", "HANDOFF_HTTP_PORT": "8080"}
    from services.config import load_config

    config = load_config(None).model_copy(update={"crm": load_config(None).crm.model_copy(  # type: ignore[union-attr]
        update={"secret_env": "CUSTOM_HMAC"})})
    found = secret_values(env, config=config, database_url="postgresql+asyncpg://u:db-pass-99@h/db")
    assert set(found) == {"web-secret-1", "web-secret-2", "seg-key-123", "tok-abcdef", "custom-value-1",
                          "db-pass-99"}


def test_installed_factory_redacts_every_logger_and_traceback(captured: io.StringIO) -> None:
    log = logging.getLogger("some.library")
    log.info("pushing %s with key %s", "jane.doe@acme.com", "crm-s3cret-value")
    log.debug("routing %s", {"routing_key": "rk-12345678", "email": "bob@corp.example"})
    try:
        raise ValueError("bad token api-token-abcdef for carol@acme.com")
    except ValueError:
        log.exception("failed for %s", "dave@acme.com")
    text = captured.getvalue()
    for leak in ("jane.doe@", "crm-s3cret-value", "rk-12345678", "bob@", "api-token-abcdef", "carol@", "dave@"):
        assert leak not in text, leak
    assert "j***@acme.com" in text and "ValueError" in text and "Traceback" in text


@settings(max_examples=200, deadline=None)
@given(local=st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True),
       domain=st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}\.[a-z]{2,6}", fullmatch=True),
       around=st.text(alphabet=" :,;()[]{}'\"<>=\n", max_size=3))
def test_any_email_is_masked(local: str, domain: str, around: str) -> None:
    out = mask_emails(f"{around}{local}@{domain}{around}")
    assert f"{local}@{domain}" not in out
    assert f"{local[0]}***@{domain}" in out
