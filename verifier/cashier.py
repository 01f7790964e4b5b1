"""The header set of a Mozarto Cashier API call (Pay-In, Pay-Out), for either user mode."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from .tokens import fingerprint

COMPANY_TOKEN_VARIABLE = "MOZARTO_COMPANY_TOKEN"  # noqa: S105 (a variable name)


@dataclass(frozen=True)
class Header:
    """One header; `secret` marks the part of the value that is masked unless revealed."""

    name: str
    prefix: str
    secret: str | None = None

    def value(self, reveal: bool) -> str:
        """The value, with its secret masked unless `reveal`."""
        if self.secret is None:
            return self.prefix
        shown = self.secret if reveal else \
            f"<masked {len(self.secret)} chars, sha256 {fingerprint(self.secret)}>"
        return f"{self.prefix}{shown}"


def cashier_headers(company_token: str, *, session_token: str | None = None,
                    user_token: str | None = None) -> list[Header]:
    """Authorization with the company JWT, and one user header: exactly one mode must be given.

    x-user-authorization carries the session token bare, as Mozarto's table describes it; Mozarto
    forwards it to the User Auth URL, which takes it bare or after 'Bearer '. x-user-token is
    'Bearer <jwt>', as in Mozarto's examples.
    """
    if (session_token is None) == (user_token is None):
        raise ValueError("give exactly one of session_token and user_token")
    headers = [Header("Authorization", "Bearer ", company_token)]
    if session_token is not None:
        headers.append(Header("x-user-authorization", "", session_token))
    else:
        headers.append(Header("x-user-token", "Bearer ", user_token))
    headers.append(Header("Content-Type", "application/json"))
    return headers


def as_curl(headers: list[Header], reveal: bool = False) -> str:
    """curl arguments, one header a line, quoted for a POSIX shell."""
    return " \\\n".join(f"-H {shlex.quote(f'{h.name}: {h.value(reveal)}')}" for h in headers)


def as_json(headers: list[Header], reveal: bool = False) -> str:
    """A JSON object of header name to value."""
    return json.dumps({h.name: h.value(reveal) for h in headers}, indent=2)
