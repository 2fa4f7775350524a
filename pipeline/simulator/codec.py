"""JSON in and out with exact amounts.

Numbers with a fraction or an exponent are read as ``Decimal`` (integers stay ``int``) and are
written back as JSON numbers digit for digit, so ``0.1`` stays ``0.1`` and
``12345678901234567890.123456789`` is never rounded through a float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.responses import Response


class BodyError(ValueError):
    """The request body is not JSON the simulator can read."""


def decode(body: bytes) -> Any:
    """Parse ``body``; NaN and Infinity are refused, as they are not JSON."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"the body is not valid JSON: {exc}") from exc


def encode(value: object) -> bytes:
    """Serialise ``value`` (dicts, lists, str, int, Decimal, float, bool, None) compactly."""
    return _dump(value).encode()


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _dump(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        members = (f"{json.dumps(str(key))}:{_dump(item)}" for key, item in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dump(item) for item in value) + "]"
    return json.dumps(value, allow_nan=False)


def respond(value: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with exact numbers."""
    return Response(encode(value), status, headers, media_type="application/json")


def message(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    """An error response: ``{"message": text}``."""
    return respond({"message": text}, status, headers)
