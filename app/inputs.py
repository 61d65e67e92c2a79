"""What every piece of client input is before Corral uses it: the rules that request bodies,
parameters and headers of every domain share (DESIGN §11, §15).

- **No NUL.** Postgres text cannot hold `\\x00`. `RequestBody`, the base of every request body
  (a test holds every route to it), refuses a NUL in any string of any field, nested lists and
  mappings included; `RequestContext` refuses one anywhere in the URL (`has_nul`).
- **Printable people.** An owner or a user (`Owner`: the `owner` of bodies, `X-Corral-Owner`,
  a key's owner, a session's `user`) holds no control character (Unicode Cc), no format
  character (Cf: zero-width characters, bidi overrides and isolates, the BOM) and no line or
  paragraph separator (Zl, Zp), so two owners that print the same are the same owner. The
  published `OWNER_PATTERN` says what a JSON-Schema regex can; `unprintable` is the rule.
- **Instants in range.** A client's instant has an offset and lies in [`EARLIEST`, `LATEST`)
  (`Instant`, `check_instant`), so turning it into UTC, storing it and the arithmetic of reports
  and cursors never overflow Python's or Postgres's calendar.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, get_args
from urllib.parse import unquote_to_bytes

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

# --- NUL ---------------------------------------------------------------------------------

NUL = "\x00"


def holds_nul(value: object) -> bool:
    """Whether a validated field value has a NUL in any string inside it (keys too)."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, Mapping):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(holds_nul(item) for item in value)
    # Nested bodies are RequestBody too and check their own fields.
    return False


def has_nul(path: str, query_string: bytes) -> bool:
    """Whether a request URL (its decoded path, its percent-encoded query) holds a NUL."""
    return NUL in path or b"\x00" in unquote_to_bytes(query_string)


def _admits_bool(annotation: Any) -> bool:
    """Whether a field of type `annotation` may hold a boolean (bool or Any, at any depth)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in get_args(annotation))


class RequestBody(BaseModel):
    """The base of every request body: unknown fields are refused (STYLE), and so is a NUL in
    any text."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        # Pydantic's lax mode reads `true` as 1 for an int or a float: `{"seconds": true}` is
        # a client's mistake, not a second.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
            raise PydanticCustomError("bool_not_allowed", "A boolean is not allowed here.")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if holds_nul(value):
            raise PydanticCustomError(
                "nul_character", "Text may not contain the NUL character (\\x00)."
            )
        return value


# --- owners and users --------------------------------------------------------------------

# Cc (controls), Cf (format: zero-width, bidi), Zl and Zp (line and paragraph separators).
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
OWNER_MAX_LENGTH = 200
# What JSON Schema can say of the rule: no leading space or slash, no ASCII or C1 control.
OWNER_PATTERN = r"^[^\s/\\][^\x00-\x1f\x7f-\x9f]{0,199}$"


def unprintable(value: str) -> str | None:
    """The first character of `value` that an owner may not hold, as U+XXXX, or None."""
    for char in value:
        if unicodedata.category(char) in UNPRINTABLE_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def _printable(value: str) -> str:
    found = unprintable(value)
    if found is not None:
        raise PydanticCustomError(
            "unprintable_character",
            "Owners and users may not hold control, format (zero-width, bidi) or separator "
            "characters; found {character}.",
            {"character": found},
        )
    return value


Owner = Annotated[
    str,
    Field(min_length=1, max_length=OWNER_MAX_LENGTH, pattern=OWNER_PATTERN),
    AfterValidator(_printable),
]
_OWNER = TypeAdapter(Owner)


def owner_problem(value: str) -> str | None:
    """Why `value` is not an owner (for callers without a schema, such as the CLI), or None."""
    try:
        _OWNER.validate_python(value)
    except ValidationError as exc:
        return "; ".join(error["msg"] for error in exc.errors())
    return None


# --- instants ----------------------------------------------------------------------------

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def in_range(moment: datetime) -> bool:
    """Whether an aware instant lies in [EARLIEST, LATEST) (False where UTC cannot hold it)."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        return False
    return EARLIEST <= utc < LATEST


def check_instant(moment: datetime) -> datetime:
    if not in_range(moment):
        raise PydanticCustomError(
            "instant_out_of_range",
            "Instants must lie from {earliest} up to {latest} (UTC).",
            {"earliest": EARLIEST.date().isoformat(), "latest": LATEST.date().isoformat()},
        )
    return moment


# The start of an ISO-8601 date-time: what the API documents an instant as.
_ISO_DATE = re.compile(r"\s*[+-]?\d{4,}-\d{2}-\d{2}")


def _with_offset(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # Pydantic would also read a number, or a string of one, as Unix time: `to=0.5` is far
    # likelier a mistake than 1970-01-01T00:00:00.5Z, and no client is told it may send one.
    if isinstance(value, int | float) or (isinstance(value, str) and not _ISO_DATE.match(value)):
        raise PydanticCustomError(
            "datetime_format",
            "An instant is an ISO-8601 date-time with an offset, e.g. 2026-03-01T09:00:00Z.",
        )
    try:
        return handler(value)
    except ValidationError as exc:
        if any(error["type"] == "timezone_aware" for error in exc.errors()):
            raise PydanticCustomError(
                "timezone_aware",
                "The instant needs a timezone offset, e.g. 2026-03-01T09:00:00Z or "
                "2026-03-01T10:00:00+01:00.",
            ) from None
        raise


Instant = Annotated[AwareDatetime, WrapValidator(_with_offset), AfterValidator(check_instant)]
