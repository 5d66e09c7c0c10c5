"""What every ARM request body model shares, and how a body that does not fit one is refused.

The wire models of the management plane (``schemas/arm.py`` for the ARM core, ``schemas/arm_compute.py`` and
``schemas/arm_batch.py`` for the resource providers) use Azure's property names, JSON types, enums, ranges and
ISO 8601 durations. They are strict: a string is not a number or a boolean, a number is not a string. They
allow properties they do not name, as Azure does (the SDKs and ``az`` send many, and a body read back from a GET
carries read-only ones); the domain rules refuse those Shoal cannot honour, with their own messages.

A body that does not fit is refused before anything is stored, in ARM's envelope, naming the property path as
``target`` (``properties.storageProfile.dataDisks[0].lun``):

- ``InvalidRequestContent`` when a property has the wrong JSON type (the body cannot be deserialized);
- ``InvalidParameter`` when a value is outside Azure's range or enum, or a required property is missing
  (resource-provider bodies; the ARM core's own bodies report a missing property as ``InvalidRequestContent``,
  as ARM's deserializer does).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from shoal.core import errors, timefmt

W = TypeVar("W", bound="Wire")

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_LUN = 63
MAX_TAGS, MAX_TAG_NAME, MAX_TAG_VALUE = 50, 512, 256


class Wire(BaseModel):
    """An ARM request body or a part of one."""

    model_config = ConfigDict(strict=True, extra="allow")
    # The code of a missing required property, read from the outermost model of a body.
    missing_code: ClassVar[str] = "InvalidParameter"


# --- value types --------------------------------------------------------------------------------------------
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Count32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
Positive32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
Lun = Annotated[int, Field(ge=0, le=MAX_LUN)]
DiskSizeGB = Annotated[int, Field(ge=1, le=INT32_MAX)]


def one_of(*values: str) -> Callable[[str], str]:
    """An Azure enum: matched without regard to case (as Azure reads them) and stored in Azure's spelling."""
    spelling = {v.lower(): v for v in values}

    def check(value: str) -> str:
        found = spelling.get(value.lower())
        if found is None:
            raise ValueError(f"it must be one of: {', '.join(values)}")
        return found

    return check


def _duration(text: str) -> str:
    timefmt.parse_duration(text)  # TimeFormatError (a ValueError) names what is wrong
    return text


def _timestamp(text: str) -> str:
    try:
        timefmt.parse_timestamp(text)
    except timefmt.TimeFormatError:
        try:
            date.fromisoformat(text.strip())  # Azure reads a bare date as its midnight
        except ValueError:
            raise ValueError(f"'{text[:100]}' is not an ISO 8601 timestamp (for example "
                             "2030-01-01T00:00:00Z)") from None
    return text


def _base64(text: str) -> str:
    try:
        base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("it must be base64-encoded") from None
    return text


Duration = Annotated[str, AfterValidator(_duration)]
Timestamp = Annotated[str, AfterValidator(_timestamp)]
Base64 = Annotated[str, AfterValidator(_base64)]


def _tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"a resource can have at most {MAX_TAGS} tags, not {len(tags)}")
    for name, value in tags.items():
        if not name or len(name) > MAX_TAG_NAME:
            raise ValueError(f"the tag name '{name[:100]}' must have 1 to {MAX_TAG_NAME} characters")
        if len(value) > MAX_TAG_VALUE:
            raise ValueError(f"the value of the tag '{name[:100]}' has more than {MAX_TAG_VALUE} characters")
    return tags


Tags = Annotated[dict[str, str], AfterValidator(_tags)]


# --- parts every provider shares ----------------------------------------------------------------------------
class SubResource(Wire):
    """A reference to another resource: ``{"id": "/subscriptions/..."}``."""

    id: str | None = None


class Plan(Wire):
    name: str | None = None
    publisher: str | None = None
    product: str | None = None
    promotionCode: str | None = None
    version: str | None = None


class ExtendedLocation(Wire):
    name: str | None = None
    type: str | None = None


IdentityType = Annotated[str, AfterValidator(one_of(
    "SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned", "SystemAssigned,UserAssigned", "None"))]


class Identity(Wire):
    type: IdentityType | None = None
    userAssignedIdentities: dict[str, dict[str, Any] | None] | None = None


class Sku(Wire):
    name: str | None = None
    tier: str | None = None
    size: str | None = None
    family: str | None = None
    capacity: Int32 | None = None


class TrackedResource(Wire):
    """The envelope of a tracked ARM resource (``properties``, and ``sku`` where it matters, are typed by each
    kind). Every kind names the whole envelope, so that what it passes on always has the envelope's types."""

    location: str | None = None
    tags: Tags | None = None
    zones: list[str] | None = None
    extendedLocation: ExtendedLocation | None = None
    sku: Sku | None = None
    plan: Plan | None = None
    identity: Identity | None = None


class GenericResource(TrackedResource):
    """Any resource body: the envelope's types only."""

    properties: dict[str, Any] | None = None


# --- checking a body ----------------------------------------------------------------------------------------
_KINDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
          "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false",
          "float_type": "a number", "float_parsing": "a number", "dict_type": "an object",
          "model_type": "an object", "model_attributes_type": "an object", "list_type": "an array"}


def path(loc: tuple[int | str, ...]) -> str:
    """``("properties", "dataDisks", 0, "lun")`` -> ``properties.dataDisks[0].lun``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 100 else text[:100] + "..."


def _why(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    plain = {"greater_than_equal": "it must be at least {ge}", "less_than_equal": "it must be at most {le}",
             "greater_than": "it must be greater than {gt}", "less_than": "it must be less than {lt}",
             "string_too_short": "it must have at least {min_length} characters",
             "string_too_long": "it must have at most {max_length} characters",
             "too_short": "it must have at least {min_length} items", "too_long": "it must have at most "
             "{max_length} items", "string_pattern_mismatch": "it must match the pattern {pattern}"}
    if kind in plain:
        try:
            return plain[kind].format(**ctx)
        except (KeyError, IndexError, ValueError):
            return str(error.get("msg", "it is invalid"))
    if kind == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    return str(error.get("msg", "it is invalid"))


def refusal(exc: ValidationError, missing_code: str = "InvalidParameter") -> errors.AzureError:
    """The ARM error for the first property of a body that does not fit its model."""
    first = exc.errors(include_url=False)[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    where = path(loc)
    kind = first["type"]
    if kind == "missing":
        if missing_code == "InvalidRequestContent":
            return errors.InvalidRequestContent(f"The request content was invalid and could not be deserialized: "
                                                f"required property '{where}' not found.", target=where or None)
        # Generic on purpose: the code is data, the missing_code the body's outermost model declares.
        return errors.AzureError(f"Required parameter '{where}' is missing (null).", status=400,
                                 code=missing_code, target=where or None)
    if kind in _KINDS:
        return errors.InvalidRequestContent(f"The request content was invalid and could not be deserialized: "
                                            f"'{where}' must be {_KINDS[kind]}.", target=where or None)
    if kind in ("value_error", "assertion_error") or kind in (
            "greater_than_equal", "less_than_equal", "greater_than", "less_than", "string_too_short",
            "string_too_long", "too_short", "too_long", "string_pattern_mismatch", "literal_error", "enum"):
        return errors.InvalidParameter(f"The value '{_shown(first.get('input'))}' of parameter '{where}' is "
                                       f"invalid: {_why(first)}.", target=where or None)
    return errors.InvalidRequestContent(f"The request content was invalid and could not be deserialized: "
                                        f"'{where}': {first.get('msg', 'invalid')}.", target=where or None)


def parse(body: Any, model: type[W]) -> W:
    """``body`` as ``model``, or the ARM error naming the first property that does not fit."""
    if not isinstance(body, dict):
        raise errors.InvalidRequestContent("The request content was invalid: expected a JSON object.")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # JSON's \ud800 escapes: text that could never be rendered back
        raise errors.InvalidRequestContent("The request content was invalid: it holds text that is not valid "
                                           "Unicode (an unpaired surrogate escape such as \\ud800).") from None
    except (TypeError, ValueError):
        pass  # not JSON at all: the model says what is wrong
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise refusal(exc, model.missing_code) from None


def normalised(body: Any, model: type[Wire]) -> dict[str, Any]:
    """``body`` checked against ``model``, as a plain dict: the properties it gave (none added), enums in
    Azure's spelling, and the properties the model does not name kept as they came."""
    return parse(body, model).model_dump(by_alias=True, exclude_unset=True)
