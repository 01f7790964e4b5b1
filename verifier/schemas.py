"""marshmallow schemas: the user profile on the way in, and every envelope on the way out."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import phonenumbers
import pycountry
from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    pre_dump,
    validate,
    validates_schema,
)

from . import tokens
from .errors import BadRequest, ValidationFailed

PROFILE_FIELDS = ("userId", "email", "firstName", "lastName", "phone", "countryCode", "emailVerified")
REQUIRED_PROFILE_FIELDS = PROFILE_FIELDS[:-1]
USER_ID_MAX = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHONE_CHARS = re.compile(r"\+?[0-9 ().\-]{4,32}")


def _no_control_chars(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("Must not contain control characters.")
    _unicode_text(value)


def _unicode_text(value: str) -> None:
    # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 store can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be Unicode text (no unpaired surrogate escapes).") from None


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be empty.")


def is_country_code(value: str) -> bool:
    """True for an upper-case ISO 3166-1 alpha-2 code such as GB."""
    return (len(value) == 2 and value.isascii() and value.isupper()
            and pycountry.countries.get(alpha_2=value) is not None)


def is_plausible_phone(phone: str, country_code: str | None) -> bool:
    """True when the number could be dialled: international (+44...) or national in the country."""
    if not _PHONE_CHARS.fullmatch(phone):
        return False
    region = country_code if country_code and is_country_code(country_code) else None
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(number)


class UserIdField(fields.Field):  # type: ignore[type-arg]
    """A user id: a string, or an integer (Mozarto's older page sends numbers), always a string out."""

    default_error_messages = {"invalid": "Must be a string or an integer."}

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.make_error("invalid")
        text = str(value)
        if not text.strip():
            raise ValidationError("Must not be empty.")
        if len(text) > USER_ID_MAX:
            raise ValidationError(f"Must be at most {USER_ID_MAX} characters.")
        _no_control_chars(text)
        return text

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value)


def _name_field() -> fields.String:
    return fields.String(required=True, validate=[
        validate.Length(min=1, max=100), _not_blank, _no_control_chars])


class ProfileSchema(Schema):
    """The user's details as Mozarto reads them (CONTRACT.md); unknown fields are refused."""

    class Meta:
        unknown = RAISE

    userId = UserIdField(required=True)
    email = fields.Email(required=True, validate=[validate.Length(max=254), _unicode_text])
    firstName = _name_field()
    lastName = _name_field()
    phone = fields.String(required=True, validate=validate.Length(min=1, max=32),
                          metadata={"description": "International (+44...) or national in "
                                                   "countryCode.", "example": "+441234567890"})
    countryCode = fields.String(required=True, metadata={
        "description": "ISO 3166-1 alpha-2, upper case.", "pattern": "^[A-Z]{2}$", "example": "GB"})
    emailVerified = fields.Email(validate=[validate.Length(max=254), _unicode_text], allow_none=True)

    @validates_schema(skip_on_field_errors=False)
    def _check_country_and_phone(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        country = data.get("countryCode")
        if country is not None and not is_country_code(country):
            errors["countryCode"] = ["Must be an ISO 3166-1 alpha-2 code in upper case, e.g. GB."]
        phone = data.get("phone")
        if phone is not None and not is_plausible_phone(phone, country):
            errors["phone"] = ["Must be a plausible phone number, e.g. +441234567890."]
        if errors:
            raise ValidationError(errors)


def _one_path_segment(value: str) -> None:
    # The admin API names a user in its URL (/admin/v1/users/<userId>): a session made for an id
    # that cannot be one path segment could never be listed or revoked over HTTP.
    if "/" in value or value in (".", ".."):
        raise ValidationError("Must not contain '/' nor be '.' or '..' (it is a URL path segment).")


class SessionProfileSchema(ProfileSchema):
    """The profile of a user a session is made for: the admin API can name its userId in a URL."""

    userId = UserIdField(required=True, validate=_one_path_segment)


class ProfileOutSchema(Schema):
    """The profile as verifier answers it: strings only, emailVerified left out when unset."""

    userId = fields.String(required=True)
    email = fields.String(required=True)
    firstName = fields.String(required=True)
    lastName = fields.String(required=True)
    phone = fields.String(required=True)
    countryCode = fields.String(required=True)
    emailVerified = fields.String()


class VerifyRequestSchema(Schema):
    """Mozarto's optional body: {"userId": "u-1"} or {"userId": 1}; other keys are ignored."""

    class Meta:
        unknown = EXCLUDE

    userId = UserIdField()


class VerifiedEnvelopeSchema(Schema):
    """The 200 answer of the User Auth URL, in Mozarto's own envelope."""

    status = fields.Constant("success", required=True)
    message = fields.Constant("User verified", required=True)
    isSuccess = fields.Constant(True, required=True)
    data = fields.Nested(ProfileOutSchema, required=True)


PROFILE = ProfileSchema()
SESSION_PROFILE = SessionProfileSchema()
PROFILE_OUT = ProfileOutSchema()
VERIFY_REQUEST = VerifyRequestSchema()
VERIFIED_ENVELOPE = VerifiedEnvelopeSchema()


def load_profile(data: Any, *, for_session: bool = False) -> dict[str, str]:
    """Validate a whole profile (for_session: its userId a URL path segment); name each bad field."""
    if not isinstance(data, Mapping):
        raise BadRequest("The profile must be a JSON object.")
    try:
        profile: dict[str, str] = (SESSION_PROFILE if for_session else PROFILE).load(data)
    except ValidationError as exc:
        raise ValidationFailed(_field_errors(exc)) from None
    if profile.get("emailVerified") is None:
        profile.pop("emailVerified", None)
    return profile


def merge_profile(current: Mapping[str, str], changes: Any) -> dict[str, str]:
    """Apply changes (a partial profile; null clears emailVerified) and validate the result whole."""
    if not isinstance(changes, Mapping):
        raise BadRequest("The profile changes must be a JSON object.")
    if "userId" in changes and str(changes["userId"]) != current["userId"]:
        raise ValidationFailed({"userId": ["The user id cannot be changed."]})
    merged: dict[str, Any] = dict(current)
    merged.update(changes)
    return load_profile(merged)


# VerifyRequestSchema has one field and ignores the rest, so on every verification its field
# alone is run (Schema.load's own machinery cost 8 us more); test_schemas checks both agree.
_VERIFY_USER_ID = VERIFY_REQUEST.fields["userId"]


def load_verify_request(data: Any) -> str | None:
    """The userId Mozarto sent in the body, as a string, or None when it sent none."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise BadRequest("The body must be a JSON object such as {\"userId\": \"u-1\"}.")
    if "userId" not in data:
        return None
    try:
        user_id: str | None = _VERIFY_USER_ID.deserialize(data["userId"], "userId", data)
    except ValidationError as exc:
        raise BadRequest(f"userId: {' '.join(str(m) for m in exc.messages)}") from None
    return user_id


# dump_verified runs on every verification, so what VerifiedEnvelopeSchema would work out the same
# way each time (its constants, the profile's field names) is worked out once. Every profile field
# is a fields.String, whose dump is str(); test_schemas checks this equals the schema's own dump.
_VERIFIED_CONSTANTS: dict[str, Any] = VERIFIED_ENVELOPE.dump({})
_PROFILE_OUT_NAMES = tuple(PROFILE_OUT.dump_fields)


def dump_verified(profile: Mapping[str, str]) -> dict[str, Any]:
    """The success envelope for a verified user (fields without a value are left out)."""
    data = {name: str(profile[name]) for name in _PROFILE_OUT_NAMES
            if profile.get(name) is not None}
    return {**_VERIFIED_CONSTANTS, "data": data}


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    out: dict[str, list[str]] = {}
    for name, msgs in messages.items():
        if isinstance(msgs, dict):
            msgs = [f"{k}: {v}" for k, v in msgs.items()]
        out[str(name)] = [str(m) for m in msgs]
    return out


# The admin API: request bodies (unknown fields refused) and its answers.

LIFETIME_FIELDS = ("ttlSeconds", "idleTimeoutSeconds")
FLAG_FIELDS = ("blocked", "passwordExpired")


def iso_utc(ms: int) -> str:
    """A time in ms since the epoch as ISO 8601 in UTC, e.g. 2025-01-31T12:00:00.000Z."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UtcTimestamp(fields.DateTime):
    """A time kept in ms since the epoch, answered as ISO 8601 in UTC with a Z."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else iso_utc(int(value))


class StrictBoolean(fields.Boolean):
    """JSON true or false, and nothing that merely looks like one ("yes", 1)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def _registrable_token(value: str) -> None:
    problem = tokens.check_registrable(value)
    if problem:
        raise ValidationError(problem)


class CreateSessionSchema(SessionProfileSchema):
    """A create body: the user's profile fields, flat, and optionally the session's lifetimes."""

    ttlSeconds = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1),
        metadata={"description": "Absolute lifetime in seconds. Default VERIFIER_SESSION_TTL_SECONDS "
                                 "(24 h); at most VERIFIER_SESSION_MAX_TTL_SECONDS (30 days)."})
    idleTimeoutSeconds = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0),
        metadata={"description": "The session ends after this long without a verification; 0: "
                                 "never. Default VERIFIER_SESSION_IDLE_TIMEOUT_SECONDS."})

    def __init__(self, *, max_ttl_seconds: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_ttl_seconds = max_ttl_seconds

    @validates_schema(skip_on_field_errors=False)
    def _check_lifetimes(self, data: dict[str, Any], **kwargs: Any) -> None:
        longest = self.max_ttl_seconds
        if longest is None:
            return
        errors = {name: [f"Must be at most {longest} (VERIFIER_SESSION_MAX_TTL_SECONDS)."]
                  for name in LIFETIME_FIELDS if (data.get(name) or 0) > longest}
        if errors:
            raise ValidationError(errors)


class RegisterSessionSchema(CreateSessionSchema):
    """A register body: the platform's own session token or JWT, and the rest as for a create."""

    token = fields.String(required=True, validate=_registrable_token, metadata={
        "description": "The platform's own token, at least 32 visible ASCII characters; it is "
                       "kept only as a hash."})


class RevokeSessionSchema(Schema):
    """A revoke body: the token to end goes in the body, where no proxy logs it."""

    class Meta:
        unknown = RAISE

    token = fields.String(required=True, validate=validate.Length(min=1, max=tokens.TOKEN_MAX_CHARS))


class UserUpdateSchema(ProfileSchema):
    """A user's profile and flags as an update leaves them; the body of a PATCH is any subset."""

    blocked = StrictBoolean(metadata={"description": "true: verification answers 403 user_blocked."})
    passwordExpired = StrictBoolean(
        metadata={"description": "true: verification answers 403 password_expired."})


class SessionRegisteredSchema(Schema):
    """A session just registered: whose it is and when it ends."""

    userId = fields.String(required=True)
    expiresAt = UtcTimestamp(required=True)
    idleTimeoutSeconds = fields.Integer(required=True)

    @pre_dump
    def _from_created(self, created: Any, **kwargs: Any) -> dict[str, Any]:
        return {"token": created.token, "userId": created.user_id,
                "expiresAt": round(created.expires_at * 1000),
                "idleTimeoutSeconds": created.idle_timeout_seconds}


class SessionCreatedSchema(SessionRegisteredSchema):
    """A session just created, with its token: the only time the token is ever shown."""

    token = fields.String(required=True)


class SessionSchema(Schema):
    """One live session as listed: a stable id, never the token or its full hash."""

    sessionId = fields.String(required=True)
    createdAt = UtcTimestamp(required=True)
    expiresAt = UtcTimestamp(required=True)
    lastVerifiedAt = UtcTimestamp(required=True, allow_none=True,
                                  metadata={"description": "null: never verified yet."})
    idleTimeoutSeconds = fields.Integer(required=True)

    @pre_dump
    def _from_info(self, info: Any, **kwargs: Any) -> dict[str, Any]:
        return {"sessionId": info.session_id, "createdAt": info.created_ms,
                "expiresAt": info.expires_ms, "lastVerifiedAt": info.last_verified_ms or None,
                "idleTimeoutSeconds": info.idle_ms // 1000}


class SessionListSchema(Schema):
    """A user's live sessions, oldest first."""

    userId = fields.String(required=True)
    sessions = fields.List(fields.Nested(SessionSchema), required=True)


class RevokedSchema(Schema):
    """How many live sessions a revocation ended."""

    revoked = fields.Integer(required=True)


class UserSchema(ProfileOutSchema):
    """A user as verifier knows them: the profile and both flags."""

    blocked = fields.Boolean(required=True)
    passwordExpired = fields.Boolean(required=True)

    @pre_dump
    def _from_record(self, record: Any, **kwargs: Any) -> dict[str, Any]:
        return {**record.profile, "blocked": record.blocked,
                "passwordExpired": record.password_expired}


class ErrorDetailSchema(Schema):
    """One entry of `errors`: a machine-readable code, a message, and the field when there is one."""

    code = fields.String(required=True)
    message = fields.String(required=True)
    field = fields.String()


class ErrorEnvelopeSchema(Schema):
    """Every error answer (errors.envelope): the first entry of `errors` carries the code."""

    status = fields.Constant("error", required=True)
    message = fields.String(required=True)
    isSuccess = fields.Constant(False, required=True)
    errors = fields.List(fields.Nested(ErrorDetailSchema), required=True)


class HealthSchema(Schema):
    """A health answer."""

    status = fields.String(required=True, validate=validate.OneOf(["ok", "ready"]))


SESSION_CREATED = SessionCreatedSchema()
SESSION_REGISTERED = SessionRegisteredSchema()
SESSION_LIST = SessionListSchema()
REVOKED = RevokedSchema()
USER = UserSchema()
USER_UPDATE = UserUpdateSchema()
REVOKE_SESSION = RevokeSessionSchema()


@functools.cache
def _session_request_schema(register: bool, max_ttl_seconds: int) -> CreateSessionSchema:
    cls = RegisterSessionSchema if register else CreateSessionSchema
    return cls(max_ttl_seconds=max_ttl_seconds)


def load_session_request(data: Any, *, max_ttl_seconds: int, register: bool = False) -> dict[str, Any]:
    """Validate a create (or register) body whole; raise ValidationFailed naming each bad field."""
    return _load(_session_request_schema(register, max_ttl_seconds), data)


_USER_ID = UserIdField()


def load_user_id(value: str) -> str:
    """A user id from a URL path, checked like the profile's userId."""
    try:
        return str(_USER_ID.deserialize(value))
    except ValidationError as exc:
        raise ValidationFailed({"userId": _messages_of(exc)}) from None


def load_revoke_request(data: Any) -> str:
    """The token of a revoke body."""
    return str(_load(REVOKE_SESSION, data)["token"])


def merge_user(current: Mapping[str, Any], changes: Any) -> dict[str, Any]:
    """Apply a partial update (profile fields, flags; null clears emailVerified), validated whole."""
    if not isinstance(changes, Mapping):
        raise BadRequest("The body must be a JSON object.")
    if not changes:
        raise BadRequest("Give at least one field to change.")
    errors: dict[str, list[str]] = {}
    if "userId" in changes and str(changes["userId"]) != current["userId"]:
        errors["userId"] = ["The user id cannot be changed."]
    try:
        merged: dict[str, Any] = USER_UPDATE.load(
            {**current, **changes, "userId": current["userId"]})
    except ValidationError as exc:
        errors.update(_field_errors(exc))
    if errors:
        raise ValidationFailed(errors)
    return merged


def _messages_of(exc: ValidationError) -> list[str]:
    messages = exc.messages
    return [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]


def _load(schema: Schema, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise BadRequest("The body must be a JSON object.")
    try:
        return schema.load(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise ValidationFailed(_field_errors(exc)) from None


# x-user-tokens minted through the admin API: from a live session, or from a profile.

def _ttl_field() -> fields.Integer:
    return fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1), metadata={
        "description": "Lifetime in seconds (exp). Default VERIFIER_USER_TOKEN_TTL_SECONDS (300)."})


class UserTokenFromSessionSchema(Schema):
    """Mint for the user of a live session: the session must verify (not expired, not blocked)."""

    class Meta:
        unknown = RAISE

    sessionToken = fields.String(required=True, validate=validate.Length(
        min=1, max=tokens.TOKEN_MAX_CHARS), metadata={"description": "A live session token."})
    ttlSeconds = _ttl_field()


class UserTokenFromProfileSchema(ProfileSchema):
    """Mint for a profile given whole, as for creating a session."""

    ttlSeconds = _ttl_field()


class UserTokenIssuedSchema(Schema):
    """A minted x-user-token, the header value to send it in, when it expires and what it says."""

    userToken = fields.String(required=True, metadata={"description": "The bare JWT (HS256)."})
    header = fields.String(required=True, metadata={
        "description": "The x-user-token header value: 'Bearer <jwt>', as Mozarto's examples send it."})
    expiresAt = UtcTimestamp(required=True)
    claims = fields.Dict(required=True, metadata={
        "description": "The JWT's claims: the profile fields as strings, iat and exp."})

    @pre_dump
    def _from_issued(self, issued: Any, **kwargs: Any) -> dict[str, Any]:
        return {"userToken": issued.token, "header": issued.header_value,
                "expiresAt": issued.expires_at * 1000, "claims": issued.claims}


USER_TOKEN_FROM_SESSION = UserTokenFromSessionSchema()
USER_TOKEN_FROM_PROFILE = UserTokenFromProfileSchema()
USER_TOKEN_ISSUED = UserTokenIssuedSchema()


def load_user_token_request(data: Any) -> tuple[str | None, dict[str, Any] | None, int | None]:
    """(session token, None, ttl) or (None, profile, ttl) from a mint body; ValidationFailed else."""
    if not isinstance(data, Mapping):
        raise BadRequest("The body must be a JSON object.")
    if "sessionToken" in data:
        both = sorted(set(data) & set(PROFILE_FIELDS))
        if both:
            raise ValidationFailed({"sessionToken": [
                f"Give either sessionToken or the profile fields, not both (got {', '.join(both)})."]})
        loaded = _load(USER_TOKEN_FROM_SESSION, data)
        return loaded["sessionToken"], None, loaded.get("ttlSeconds")
    profile = _load(USER_TOKEN_FROM_PROFILE, data)
    ttl = profile.pop("ttlSeconds", None)
    if profile.get("emailVerified") is None:
        profile.pop("emailVerified", None)
    return None, profile, ttl
