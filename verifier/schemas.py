"""marshmallow schemas: the user profile on the way in, and every envelope on the way out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import phonenumbers
import pycountry
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from .errors import BadRequest, ValidationFailed

PROFILE_FIELDS = ("userId", "email", "firstName", "lastName", "phone", "countryCode", "emailVerified")
REQUIRED_PROFILE_FIELDS = PROFILE_FIELDS[:-1]
USER_ID_MAX = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHONE_CHARS = re.compile(r"\+?[0-9 ().\-]{4,32}")


def _no_control_chars(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("Must not contain control characters.")


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
    email = fields.Email(required=True, validate=validate.Length(max=254))
    firstName = _name_field()
    lastName = _name_field()
    phone = fields.String(required=True, validate=validate.Length(min=1, max=32))
    countryCode = fields.String(required=True)
    emailVerified = fields.Email(validate=validate.Length(max=254), allow_none=True)

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


class ProfileOutSchema(Schema):
    """The profile as verifier answers it: strings only, emailVerified left out when unset."""

    userId = fields.String()
    email = fields.String()
    firstName = fields.String()
    lastName = fields.String()
    phone = fields.String()
    countryCode = fields.String()
    emailVerified = fields.String()


class VerifyRequestSchema(Schema):
    """Mozarto's optional body: {"userId": "u-1"} or {"userId": 1}; other keys are ignored."""

    class Meta:
        unknown = EXCLUDE

    userId = UserIdField()


class VerifiedEnvelopeSchema(Schema):
    """The 200 answer of the User Auth URL, in Mozarto's own envelope."""

    status = fields.Constant("success")
    message = fields.Constant("User verified")
    isSuccess = fields.Constant(True)
    data = fields.Nested(ProfileOutSchema)


PROFILE = ProfileSchema()
PROFILE_OUT = ProfileOutSchema()
VERIFY_REQUEST = VerifyRequestSchema()
VERIFIED_ENVELOPE = VerifiedEnvelopeSchema()


def load_profile(data: Any) -> dict[str, str]:
    """Validate a whole profile; raise ValidationFailed naming each bad field."""
    if not isinstance(data, Mapping):
        raise BadRequest("The profile must be a JSON object.")
    try:
        profile: dict[str, str] = PROFILE.load(data)
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


def load_verify_request(data: Any) -> str | None:
    """The userId Mozarto sent in the body, as a string, or None when it sent none."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise BadRequest("The body must be a JSON object such as {\"userId\": \"u-1\"}.")
    try:
        loaded = VERIFY_REQUEST.load(data)
    except ValidationError as exc:
        raise BadRequest(f"userId: {' '.join(_field_errors(exc).get('userId', ['is invalid.']))}") from None
    user_id: str | None = loaded.get("userId")
    return user_id


def dump_verified(profile: Mapping[str, str]) -> dict[str, Any]:
    """The success envelope for a verified user."""
    envelope: dict[str, Any] = VERIFIED_ENVELOPE.dump({"data": profile})
    return envelope


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    out: dict[str, list[str]] = {}
    for name, msgs in messages.items():
        if isinstance(msgs, dict):
            msgs = [f"{k}: {v}" for k, v in msgs.items()]
        out[str(name)] = [str(m) for m in msgs]
    return out
