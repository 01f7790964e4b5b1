"""Check an x-user-token before it is sent: everything that would make Mozarto fail or mis-identify."""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from . import schemas, user_tokens
from .errors import ValidationFailed

HEADER_NAME = "x-user-token"
# Claims RFC 7519 registers; anything else beyond the profile is reported, not refused.
REGISTERED_CLAIMS = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti")
NUMERIC_CLAIMS = ("exp", "nbf", "iat")
LONG_LIVED_SECONDS = 24 * 3600
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)bearer(?=[ \t:]|$)")
# decode_json's answer for a part it could not read (JSON null decodes to None, a valid reading).
_UNREADABLE = object()


class Severity(enum.StrEnum):
    """How bad a finding is: errors fail the check; warnings only with --strict."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Form(enum.StrEnum):
    """What the input to `check` is.

    HEADER: the x-user-token header value, `Bearer <jwt>` as Mozarto's examples send it.
    JWT: the bare token (the USER_TOKEN variable of Mozarto's examples, what `mint` prints).
    AUTO: either; only a form that is wrong in both readings is a finding.
    """

    AUTO = "auto"
    HEADER = "header"
    JWT = "jwt"


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth knowing) about a token."""

    severity: Severity
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-ready strings."""
        return {**asdict(self), "severity": self.severity.value}


@dataclass(frozen=True)
class CheckReport:
    """Every finding about one token, and what could be read from it."""

    findings: tuple[Finding, ...]
    header: dict[str, Any] | None
    payload: dict[str, Any] | None

    @property
    def errors(self) -> list[Finding]:
        """The findings that make Mozarto fail or mis-identify the user."""
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        """The findings Mozarto may accept but that are risky or likely a mistake."""
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def passed(self, strict: bool = False) -> bool:
        """No errors (and, when strict, no warnings)."""
        return not self.errors and not (strict and self.warnings)


class _Checker:
    def __init__(self, secret_key: str | None, now: float) -> None:
        self.secret_key = secret_key
        self.now = now
        self.findings: list[Finding] = []
        self.header: dict[str, Any] | None = None
        self.payload: dict[str, Any] | None = None

    def add(self, severity: Severity, code: str, message: str) -> None:
        self.findings.append(Finding(severity, code, message))

    def error(self, code: str, message: str) -> None:
        self.add(Severity.ERROR, code, message)

    def warning(self, code: str, message: str) -> None:
        self.add(Severity.WARNING, code, message)

    def info(self, code: str, message: str) -> None:
        self.add(Severity.INFO, code, message)

    # The envelope around the JWT: whitespace, header name, Bearer.
    def unwrap(self, raw: str, form: Form) -> str | None:
        if raw.strip() == "":
            self.error("empty", "The token is empty.")
            return None
        value = raw
        if "\n" in value or "\r" in value:
            self.error("line_break",
                       "The value has a line break; a header value is one line. Strip it.")
        elif value != value.strip():
            self.warning("surrounding_whitespace",
                         "The value has leading or trailing spaces; strip them.")
        value = value.strip()
        name, sep, rest = value.partition(":")
        if sep and name.strip().lower() == HEADER_NAME:
            self.error("header_name_included",
                       f"The value starts with the header name '{name.strip()}:'; give only what "
                       f"follows '{HEADER_NAME}:'.")
            value = rest.strip()
        prefixes: list[str] = []
        separators: list[str] = []
        while (match := _BEARER.match(value)) is not None:
            prefixes.append(match.group(0))
            rest = value[match.end():]
            value = rest.lstrip(" \t:")
            separators.append(rest[:len(rest) - len(value)])
        if not prefixes:
            if form is Form.HEADER:
                self.warning("bearer_missing",
                             f"No 'Bearer ' prefix: Mozarto's examples send "
                             f"'{HEADER_NAME}: Bearer <jwt>'.")
            else:
                self.info("read_as_jwt",
                          f"Read as a bare JWT; send it as '{HEADER_NAME}: Bearer <jwt>'.")
        elif form is Form.JWT:
            self.error("bearer_unexpected",
                       "A 'Bearer ' prefix in a bare token: the header would read 'Bearer Bearer "
                       "<jwt>'. Keep the token bare and add 'Bearer ' only in the header.")
        elif len(prefixes) > 1:
            self.error("bearer_repeated",
                       f"'Bearer' appears {len(prefixes)} times; the header value is 'Bearer <jwt>' "
                       "with one prefix.")
        else:
            self.info("read_as_header", "Read as the header value 'Bearer <jwt>'.")
            if prefixes[0] != "Bearer":
                self.warning("bearer_spelling",
                             f"'{prefixes[0]}' is not spelled 'Bearer' as in Mozarto's examples.")
            if ":" in separators[0]:
                self.error("bearer_colon", "'Bearer:' has a colon; the value is 'Bearer <jwt>'.")
            elif separators[0] not in (" ", ""):
                self.warning("bearer_spacing",
                             f"{separators[0]!r} after 'Bearer'; Mozarto's examples use one space.")
        if prefixes and value == "":
            self.error("not_a_jwt", "There is no token after 'Bearer'.")
            return None
        return value

    # The JWT itself.
    def parse(self, token: str) -> bool:
        if any(ch in token for ch in " \t\r\n"):
            self.error("not_a_jwt",
                       "The token contains whitespace, so it is not a JWT. Mozarto hangs and "
                       "answers 504 when x-user-token is not a JWT.")
            return False
        segments = token.split(".")
        if len(segments) != 3:
            hint = " (five segments: an encrypted JWE, which Mozarto does not decode)" \
                if len(segments) == 5 else ""
            self.error("not_a_jwt",
                       f"A JWT has three dot-separated parts; this has {len(segments)}{hint}. "
                       "Mozarto hangs and answers 504 when x-user-token is not a JWT.")
            return False
        names = ("header", "payload", "signature")
        for name, segment in zip(names, segments, strict=True):
            if not _BASE64URL.fullmatch(segment):
                self.error("not_a_jwt",
                           f"The {name} part has characters outside base64url (A-Z a-z 0-9 - _, "
                           "no padding). Mozarto hangs and answers 504 when x-user-token is not "
                           "a JWT.")
                return False
        header = self.decode_json(segments[0], "header")
        payload = self.decode_json(segments[1], "payload")
        if header is _UNREADABLE or payload is _UNREADABLE:
            return False
        if not isinstance(header, dict):
            self.error("malformed_header", "The JWT header is not a JSON object.")
            return False
        self.header = header
        if not isinstance(payload, dict):
            self.error("payload_not_object",
                       f"The payload is JSON {type(payload).__name__}, not an object with the "
                       "user's details.")
            return False
        self.payload = payload
        return True

    def decode_json(self, segment: str, name: str) -> Any:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            self.error("not_a_jwt", f"The {name} part is not valid base64url.")
            return _UNREADABLE
        duplicates: list[str] = []
        try:
            value = json.loads(raw.decode("utf-8"),
                               object_pairs_hook=lambda pairs: _object(pairs, duplicates))
        except (UnicodeDecodeError, ValueError, RecursionError):
            code = "malformed_header" if name == "header" else "malformed_payload"
            self.error(code, f"The {name} part is not UTF-8 JSON.")
            return _UNREADABLE
        if duplicates:
            self.error("duplicate_key",
                       f"The {name} has {', '.join(sorted(set(duplicates)))} more than once: "
                       "receivers differ on which one counts (some refuse the token). Give each "
                       "once.")
        return value

    def check_algorithm(self, token: str) -> None:
        assert self.header is not None
        alg = self.header.get("alg")
        if "alg" not in self.header:
            self.error("alg_missing", "The JWT header has no 'alg'; Mozarto expects HS256.")
        elif not isinstance(alg, str) or alg.lower() == "none":
            self.error("alg_none",
                       f"The JWT is unsigned (alg {alg!r}); Mozarto verifies an HS256 signature "
                       "with your Secret key.")
        elif alg != user_tokens.ALGORITHM:
            self.error("alg_not_hs256",
                       f"The JWT is signed with {alg}; Mozarto verifies HS256 with your Secret key.")
        typ = self.header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            self.warning("unusual_typ", f"The header's typ is {typ!r}, not 'JWT'.")
        if alg != user_tokens.ALGORITHM:
            return
        if not token.rsplit(".", 1)[1]:
            self.error("signature_missing", "The token has no signature part.")
        elif self.secret_key is None:
            self.info("signature_not_checked",
                      f"{user_tokens.SECRET_KEY_VARIABLE} is not set, so the signature was not "
                      "checked.")
        elif not user_tokens.signature_matches(token, self.secret_key):
            self.error("signature_mismatch",
                       f"The signature does not match {user_tokens.SECRET_KEY_VARIABLE}: Mozarto "
                       "will reject the token if that is the Secret key it holds.")

    def check_profile(self) -> None:
        payload = self.payload
        assert payload is not None
        if not payload:
            self.error("empty_payload",
                       "The payload is {}: Mozarto accepts the format but cannot identify the user.")
            return
        strings: dict[str, str] = {}
        for key in schemas.PROFILE_FIELDS:
            required = key in schemas.REQUIRED_PROFILE_FIELDS
            if key not in payload:
                if required:
                    self.error("missing_field", f"{key}: required, and missing.")
                continue
            value = payload[key]
            if not isinstance(value, str):
                kind = "null" if value is None else type(value).__name__
                self.error("not_a_string",
                           f"{key}: must be a string, is {kind} ({json.dumps(value)[:40]}).")
            elif not value.strip():
                self.error("empty_field", f"{key}: must not be empty.")
            else:
                strings[key] = value
        country = strings.get("countryCode")
        if country is not None and not schemas.is_country_code(country):
            hint = f" (did you mean {country.strip().upper()!r}?)" \
                if schemas.is_country_code(country.strip().upper()) else ""
            self.error("invalid_country_code",
                       f"countryCode: {country!r} is not an ISO 3166-1 alpha-2 code in upper "
                       f"case, e.g. 'GB'{hint}.")
        self.check_field_formats(strings)
        unknown = sorted(k for k in payload if k not in schemas.PROFILE_FIELDS
                         and k not in REGISTERED_CLAIMS)
        if unknown:
            self.info("extra_claims", f"Claims Mozarto does not read: {', '.join(unknown)}.")

    def check_field_formats(self, strings: Mapping[str, str]) -> None:
        # The schema's finer checks (email, phone, name length) only for fields that are present
        # strings: missing and mistyped ones are reported above already.
        try:
            schemas.load_profile({**_PLACEHOLDER, **strings})
        except ValidationFailed as exc:
            for key, messages in exc.fields.items():
                if key in strings and key != "countryCode":
                    self.warning("invalid_field", f"{key}: {' '.join(messages)}")

    def check_times(self) -> None:
        payload = self.payload
        assert payload is not None
        times: dict[str, float] = {}
        for claim in NUMERIC_CLAIMS:
            if claim not in payload:
                continue
            value = _seconds(payload[claim])
            if value is None:
                self.error("malformed_claim",
                           f"{claim}: must be a number of seconds since the epoch, is "
                           f"{json.dumps(payload[claim])[:40]}.")
            else:
                times[claim] = value
        now = self.now
        if "exp" not in payload:
            self.warning("exp_missing",
                         "No exp: the token never expires, so a leaked token works for ever.")
        elif "exp" in times and times["exp"] <= now:
            self.error("expired", f"exp is {_ago(now - times['exp'])} ago: the token has expired.")
        elif "exp" in times and times["exp"] - now > LONG_LIVED_SECONDS:
            self.warning("long_lived", f"exp is {_ago(times['exp'] - now)} away; x-user-tokens "
                                       "are bearer credentials, keep them short-lived.")
        if "iat" in times and times["iat"] > now:
            self.error("iat_in_future",
                       f"iat is {_ago(times['iat'] - now)} in the future: the issuer's clock is "
                       "ahead, and a receiver may refuse a token issued in the future.")
        if "nbf" in times and times["nbf"] > now:
            self.error("not_yet_valid", f"nbf is {_ago(times['nbf'] - now)} in the future: the "
                                        "token is not valid yet.")


# Stand-ins for the fields a token lacks, so the schema reports only on the fields it has.
_PLACEHOLDER = {"userId": "u", "email": "x@example.test", "firstName": "x", "lastName": "x",
                "phone": "+441234567890", "countryCode": "GB"}


def _object(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            duplicates.append(key)
        seen[key] = value
    return seen


def _seconds(value: Any) -> float | None:
    # An int too large for a float (10**400) is no date any receiver can read either.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def check_user_token(raw: str, *, secret_key: str | None = None, form: Form = Form.AUTO,
                     now: float | None = None) -> CheckReport:
    """Every finding about an x-user-token (the header value or the bare JWT, per `form`)."""
    checker = _Checker(secret_key, time.time() if now is None else now)
    token = checker.unwrap(raw, form)
    if token is not None and checker.parse(token):
        checker.check_algorithm(token)
        checker.check_profile()
        checker.check_times()
    return CheckReport(tuple(checker.findings), checker.header, checker.payload)
