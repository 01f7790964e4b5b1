"""The profile schema: every bad field named, nothing else accepted."""

from __future__ import annotations

import pytest
from conftest import PROFILE
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError, fields

from verifier import schemas
from verifier.errors import BadRequest, ValidationFailed


def test_valid_profile_loads_unchanged() -> None:
    assert schemas.load_profile(PROFILE) == PROFILE


def test_integer_user_id_becomes_a_string() -> None:
    assert schemas.load_profile({**PROFILE, "userId": 42})["userId"] == "42"


def test_email_verified_is_optional() -> None:
    profile = {k: v for k, v in PROFILE.items() if k != "emailVerified"}
    assert schemas.load_profile(profile) == profile
    assert "emailVerified" not in schemas.load_profile({**profile, "emailVerified": None})


@pytest.mark.parametrize("field,value", [
    ("email", "not-an-email"), ("emailVerified", "nope"), ("countryCode", "gb"),
    ("countryCode", "XX"), ("countryCode", "GBR"), ("phone", "call me"), ("phone", "12"),
    ("firstName", ""), ("lastName", "   "), ("firstName", "Ada\nLovelace"), ("userId", ""),
    ("userId", True), ("userId", "x" * 129), ("email", 5),
])
def test_each_bad_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ValidationFailed) as info:
        schemas.load_profile({**PROFILE, field: value})
    assert list(info.value.fields) == [field]


def test_all_missing_fields_are_named_together() -> None:
    with pytest.raises(ValidationFailed) as info:
        schemas.load_profile({})
    assert set(info.value.fields) == set(schemas.REQUIRED_PROFILE_FIELDS)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationFailed) as info:
        schemas.load_profile({**PROFILE, "isAdmin": True})
    assert "isAdmin" in info.value.fields


def test_national_phone_is_read_in_the_users_country() -> None:
    assert schemas.load_profile({**PROFILE, "phone": "01234 567890"})["phone"] == "01234 567890"


def test_profile_must_be_an_object() -> None:
    with pytest.raises(BadRequest):
        schemas.load_profile(["u-1"])


def test_merge_keeps_the_user_id() -> None:
    with pytest.raises(ValidationFailed):
        schemas.merge_profile(PROFILE, {"userId": "u-2"})
    assert schemas.merge_profile(PROFILE, {"lastName": "Byron"})["lastName"] == "Byron"


def test_success_envelope() -> None:
    assert schemas.dump_verified(PROFILE) == {
        "status": "success", "message": "User verified", "isSuccess": True, "data": PROFILE}


@pytest.mark.parametrize("profile", [
    PROFILE,
    {key: value for key, value in PROFILE.items() if key != "emailVerified"},
    {**PROFILE, "userId": "1", "firstName": "Zo\u00eb", "extra": "not in the answer"},
])
def test_success_envelope_is_what_the_schema_dumps(profile: dict[str, str]) -> None:
    # dump_verified skips marshmallow's machinery on the hot path; it must not drift from it.
    assert all(type(field) is fields.String for field in schemas.PROFILE_OUT.dump_fields.values())
    expected = schemas.VERIFIED_ENVELOPE.dump({"data": profile})
    assert schemas.dump_verified(profile) == expected
    assert list(schemas.dump_verified(profile)) == list(expected)
    assert list(schemas.dump_verified(profile)["data"]) == list(expected["data"])


@given(st.dictionaries(st.sampled_from(["userId", "other", "userid"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=140)
                       | st.lists(st.integers(), max_size=2)))
def test_the_verify_body_loads_as_its_schema_would(body: dict[str, object]) -> None:
    """load_verify_request runs VerifyRequestSchema's one field alone: same answers, same messages."""
    try:
        expected: object = schemas.VERIFY_REQUEST.load(body).get("userId")
    except ValidationError as exc:
        expected = BadRequest(f"userId: {' '.join(exc.messages['userId'])}")  # type: ignore[call-overload]
    try:
        got: object = schemas.load_verify_request(body)
    except BadRequest as exc:
        got = exc
    if isinstance(expected, BadRequest):
        assert isinstance(got, BadRequest) and str(got) == str(expected)
    else:
        assert got == expected


@pytest.mark.parametrize("field", ["userId", "email", "firstName", "lastName", "emailVerified"])
def test_an_unpaired_surrogate_in_any_text_field_is_named(field: str) -> None:
    value = "\udc80" if field in ("userId", "firstName", "lastName") else "a\udc80@example.test"
    with pytest.raises(ValidationFailed) as info:
        schemas.load_profile({**PROFILE, field: value})
    assert list(info.value.fields) == [field]
