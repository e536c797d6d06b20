"""Keys and tokens: every way in that should fail, fails (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tiffin.auth import Credentials, authenticate, bearer_value, issue_token, new_key, new_token_secret, verify_token
from tiffin.errors import AuthError

KEYS = Credentials("key", primary_key=new_key(), secondary_key=new_key())
SECRET = new_token_secret()
TOKENS = Credentials("aml_token", token_secret=SECRET)


def test_both_keys_are_valid():
    authenticate(f"Bearer {KEYS.primary_key}", "ep", KEYS)
    authenticate(f"bearer   {KEYS.secondary_key} ", "ep", KEYS)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "abc",
        "Bearer wrong",
        "Bearer " + "x" * 43,
        "Token {p}",
        "Bearer {p}x",
        "Bearer {p_short}",
    ],
)
def test_bad_key_headers_are_refused(header):
    if header:
        header = header.format(p=KEYS.primary_key, p_short=KEYS.primary_key[:-1])
    with pytest.raises(AuthError) as info:
        authenticate(header, "ep", KEYS)
    # The message says what is wrong, never the key itself.
    assert KEYS.primary_key not in info.value.message and KEYS.secondary_key not in info.value.message


def test_missing_credential_message_says_what_to_send():
    with pytest.raises(AuthError, match=r"Authorization: Bearer <key>"):
        authenticate(None, "ep", KEYS)
    with pytest.raises(AuthError, match=r"Bearer <token>"):
        authenticate(None, "ep", TOKENS)


def test_a_key_is_not_a_token_and_a_token_is_not_a_key():
    token = issue_token("ep", SECRET).access_token
    with pytest.raises(AuthError):
        authenticate(f"Bearer {token}", "ep", KEYS)
    with pytest.raises(AuthError):
        authenticate(f"Bearer {KEYS.primary_key}", "ep", TOKENS)


def test_token_round_trip_and_expiry():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    issued = issue_token("ep", SECRET, now=now, lifetime=timedelta(minutes=5))
    verify_token(issued.access_token, "ep", SECRET, now=now + timedelta(minutes=4))
    with pytest.raises(AuthError, match="expired"):
        verify_token(issued.access_token, "ep", SECRET, now=now + timedelta(minutes=5))
    azure = issued.as_azure()
    assert azure["expiryTimeUtc"] == "2026-01-01T00:05:00Z" and azure["tokenType"] == "Bearer"


def test_fresh_token_is_accepted_by_the_gateway_check():
    authenticate(f"Bearer {issue_token('ep', SECRET).access_token}", "ep", TOKENS)


def test_expired_token_is_refused_by_the_real_clock():
    token = issue_token("ep", SECRET, now=datetime.now(UTC) - timedelta(hours=2)).access_token
    with pytest.raises(AuthError, match="expired"):
        authenticate(f"Bearer {token}", "ep", TOKENS)


def test_tampered_swapped_and_foreign_tokens_are_refused():
    token = issue_token("ep", SECRET).access_token
    header, payload, signature = token.split(".")
    tampered_sig = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    forged = jwt.encode(
        {"iss": "tiffin", "aud": "ep", "exp": 4102444800},
        "not-the-secret-but-long-enough-for-hs256-keys",
        algorithm="HS256",
    )
    unsigned = jwt.encode({"iss": "tiffin", "aud": "ep", "exp": 4102444800}, None, algorithm="none")
    other_endpoint = issue_token("other", SECRET).access_token
    regenerated = issue_token("ep", new_token_secret()).access_token
    for bad in (tampered_sig, forged, unsigned, other_endpoint, regenerated, token[:-1], "a.b.c"):
        with pytest.raises(AuthError):
            authenticate(f"Bearer {bad}", "ep", TOKENS)


def test_credentials_repr_hides_secrets():
    assert KEYS.primary_key not in repr(KEYS)


def test_bearer_value():
    assert bearer_value("Bearer abc") == "abc"
    assert bearer_value("BEARER abc") == "abc"
    assert bearer_value("Bearer") is None
    assert bearer_value(None) is None


def test_local_endpoints_need_no_credential():
    authenticate(None, "ep", Credentials("none"))
