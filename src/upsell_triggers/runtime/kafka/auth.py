"""Broker authentication and TLS from the settings, for Faust's clients and for aiokafka's admin client.

Both read the same settings (UPSELL_SECURITY_PROTOCOL, the SASL and SSL ones) into one TLS context, so
the worker and its topic admin connect alike.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from upsell_triggers.settings import Settings


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (None otherwise)."""
    if s.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=s.ssl_cafile)
    if s.ssl_certfile:
        ctx.load_cert_chain(s.ssl_certfile, s.ssl_keyfile)
    return ctx


def faust_credentials(s: Settings) -> Any:
    """Faust's broker_credentials: None, SSL, or SASL (PLAIN or SCRAM) with or without TLS."""
    if s.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(s)
    if s.security_protocol.startswith("SASL"):
        password = s.sasl_password.get_secret_value() if s.sasl_password else ""
        if s.sasl_mechanism and s.sasl_mechanism.startswith("SCRAM"):
            return faust.SASLCredentials(
                username=s.sasl_username, password=password, ssl_context=context, mechanism=s.sasl_mechanism
            )
        return faust.SASLCredentials(username=s.sasl_username, password=password, ssl_context=context)
    return faust.SSLCredentials(context)


def aiokafka_auth(s: Settings) -> dict[str, Any]:
    """Keyword arguments of aiokafka's clients (with security_protocol) for the same settings."""
    out: dict[str, Any] = {}
    if s.security_protocol.startswith("SASL"):
        out.update(
            sasl_mechanism=s.sasl_mechanism or "PLAIN",
            sasl_plain_username=s.sasl_username,
            sasl_plain_password=s.sasl_password.get_secret_value() if s.sasl_password else None,
        )
    ctx = ssl_context(s)
    if ctx is not None:
        out["ssl_context"] = ctx
    return out
