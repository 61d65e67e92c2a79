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

import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
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


class RequestBody(BaseModel):
    """The base of every request body: unknown fields are refused (STYLE), and so is a NUL in
    any text."""

    model_config = ConfigDict(extra="forbid")

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


def _with_offset(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
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
