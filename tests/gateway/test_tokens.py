from __future__ import annotations

import base64

import orjson
import pytest

from tests.gateway.helpers import NOW, SECRET
from upsell_triggers.gateway.settings import GatewaySettings
from upsell_triggers.gateway.tokens import TokenError, sign, verify


def test_round_trip() -> None:
    t = sign(SECRET, "acct-1", "u-1", int(NOW) + 60)
    p = verify(SECRET, t, NOW)
    assert (p.account_id, p.user_id, p.expires_s) == ("acct-1", "u-1", int(NOW) + 60)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("v1.abc", "malformed"),
        ("v2.a.b", "malformed"),
        ("v1." + "a" * 3000 + ".b", "malformed"),
    ],
)
def test_malformed(token: str, reason: str) -> None:
    with pytest.raises(TokenError) as e:
        verify(SECRET, token, NOW)
    assert e.value.reason == reason


def test_expired_and_wrong_secret_and_tampered() -> None:
    t = sign(SECRET, "acct-1", "u-1", int(NOW) + 60)
    with pytest.raises(TokenError, match="expired"):
        verify(SECRET, t, NOW + 60)
    with pytest.raises(TokenError, match="bad_signature"):
        verify(b"x" * 32, t, NOW)
    body, sig = t[3:].split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["a"] = "acct-2"  # another account, same signature
    forged = "v1." + base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode() + "." + sig
    with pytest.raises(TokenError, match="bad_signature"):
        verify(SECRET, forged, NOW)


def test_signed_garbage_claims_are_malformed() -> None:
    import hashlib
    import hmac

    body = "v1." + base64.urlsafe_b64encode(b'{"a":"x","u":7,"exp":1}').rstrip(b"=").decode()
    mac = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
    t = body + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="malformed"):
        verify(SECRET, t, NOW)


def test_secret_must_be_set_and_long() -> None:
    with pytest.raises(ValueError, match="UPSELL_GATEWAY_SECRET is not set"):
        GatewaySettings().secret_bytes()
    with pytest.raises(ValueError, match="at least 32"):
        GatewaySettings(secret="short").secret_bytes()
