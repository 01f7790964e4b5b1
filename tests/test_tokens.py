"""Session tokens and the Authorization header."""

from __future__ import annotations

import pytest

from verifier import tokens
from verifier.errors import TokenInvalid, TokenMissing


def test_minted_tokens_carry_256_random_bits_and_the_users_tag() -> None:
    token = tokens.mint_token("u-1")
    assert token.startswith("vfs_")
    assert tokens.minted_tag(token) == tokens.routing_tag("u-1")
    secret = token[len("vfs_0000_"):]
    assert len(secret) == 43  # 32 bytes, base64url
    assert len({tokens.mint_token("u-1") for _ in range(100)}) == 100


def test_hash_is_stable_short_and_not_the_token() -> None:
    token = tokens.mint_token("u-1")
    assert tokens.token_hash(token) == tokens.token_hash(token)
    assert len(tokens.token_hash(token)) == 22
    assert tokens.token_hash(token) not in token


def test_foreign_tokens_have_no_tag() -> None:
    assert tokens.minted_tag("eyJhbGciOiJIUzI1NiJ9.e30.sig") is None
    assert tokens.minted_tag("vfs_zzzz_" + "a" * 43) is None


@pytest.mark.parametrize("header,token", [
    ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER abc", "abc"), ("Bearer \t  abc", "abc"),
    ("abc", "abc"), ("  abc\t", "abc"), ("Bearer abc==", "abc=="),
])
def test_header_forms(header: str, token: str) -> None:
    assert tokens.token_from_authorization(header) == token


@pytest.mark.parametrize("header", [None, "", "  ", "Bearer", "bearer ", "\tBEARER\t"])
def test_missing(header: str | None) -> None:
    with pytest.raises(TokenMissing):
        tokens.token_from_authorization(header)


@pytest.mark.parametrize("header", ["Bearer a b", "Basic abc", "a b", "Bearer \x00abc",
                                    "Bearer " + "a" * 4097, "caf\u00e9"])
def test_invalid(header: str) -> None:
    with pytest.raises(TokenInvalid):
        tokens.token_from_authorization(header)


@pytest.mark.parametrize("token,ok", [
    ("x" * 32, True), ("x" * 31, False), ("vfs_" + "x" * 40, False), ("has space" * 5, False),
])
def test_registrable(token: str, ok: bool) -> None:
    assert (tokens.check_registrable(token) is None) is ok
