"""User tokens: the product's backend signs (account, user, expiry) with a secret it shares with the
gateway; the browser presents the token. HMAC-SHA256 over a compact JSON payload, base64url, so any
language signs it in a few lines (docs/frontend.md has Python and Node recipes).

    token = "v1." + b64url(payload) + "." + b64url(HMAC_SHA256(secret, "v1." + b64url(payload)))
    payload = {"a": account_id, "u": user_id, "exp": unix seconds}

Why not a JWT library: the gateway accepts exactly one algorithm and one claim set, and a
hand-checked HMAC leaves no `alg: none` / key-confusion surface to configure away."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import orjson

PREFIX = "v1."
MAX_TOKEN_LEN = 2048
MAX_ID_LEN = 256


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    user_id: str
    expires_s: int


class TokenError(Exception):
    """Why a token is refused; `reason` is a short code (a metric label, never the token itself)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def sign(secret: bytes, account_id: str, user_id: str, expires_s: int) -> str:
    body = PREFIX + _b64(orjson.dumps({"a": account_id, "u": user_id, "exp": int(expires_s)}))
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return body + "." + _b64(mac)


def verify(secret: bytes, token: str, now_s: float) -> Principal:
    """The token's principal, or TokenError('malformed' | 'bad_signature' | 'expired')."""
    if not token or len(token) > MAX_TOKEN_LEN or not token.startswith(PREFIX) or token.count(".") != 2:
        raise TokenError("malformed")
    body, _, sig = token.rpartition(".")
    try:
        given = _unb64(sig)
    except ValueError:
        raise TokenError("malformed") from None
    want = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, want):
        raise TokenError("bad_signature")
    try:
        claims = orjson.loads(_unb64(body[len(PREFIX) :]))
        account, user, exp = claims["a"], claims["u"], claims["exp"]
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed") from None
    if not (
        type(account) is str
        and type(user) is str
        and type(exp) is int
        and 0 < len(account) <= MAX_ID_LEN
        and 0 < len(user) <= MAX_ID_LEN
    ):
        raise TokenError("malformed")
    if exp <= now_s:
        raise TokenError("expired")
    return Principal(account, user, exp)
