"""Each endpoint declared once: its route, its inputs, its answers. Validation and the OpenAPI
description are both read from that declaration, so the document says what the code does.

Rule: a handler never reads the request body or query itself; it asks `body()` / `query()`
with its declared fields and gets checked, typed values, or a 400 whose `details` name every
bad field at once.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from lezerprintd import __version__
from lezerprintd.auth.permissions import ACCESS, Open, Permission
from lezerprintd.errors import UserError, problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Kind(enum.Enum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    STRINGS = "strings"  # a list of strings (each from `choices` when given)
    FILE = "file"  # a file in a multipart form


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    description: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str | int, ...] = ()
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # the whole value must match
    default: object = None

    def schema(self) -> dict[str, Any]:
        """This field as a JSON Schema (the OpenAPI flavour)."""
        if self.kind is Kind.FILE:
            return {"type": "string", "format": "binary", "description": self.description}
        if self.kind is Kind.STRINGS:
            item: dict[str, Any] = {"type": "string"}
            if self.choices:
                item["enum"] = list(self.choices)
            out: dict[str, Any] = {"type": "array", "items": item}
            if self.min_length is not None:
                out["minItems"] = self.min_length
            if self.max_length is not None:
                out["maxItems"] = self.max_length
        else:
            out = {"type": self.kind.value}
            if self.choices:
                out["enum"] = list(self.choices)
            if self.minimum is not None:
                out["minimum"] = self.minimum
            if self.maximum is not None:
                out["maximum"] = self.maximum
            if self.min_length is not None:
                out["minLength"] = self.min_length
            if self.max_length is not None:
                out["maxLength"] = self.max_length
            if self.pattern is not None:
                out["pattern"] = f"^(?:{self.pattern})$"
        out["description"] = self.description
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented answer: its status, what it means and, for success, its data schema."""

    status: int
    description: str
    data: dict[str, Any] | None = None
    media: str = "application/json"  # anything else is raw bytes, not the envelope


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: tuple[Field, ...] = ()
    query: tuple[Field, ...] = ()
    answers: tuple[Answer, ...] = (Answer(200, "Done"),)
    path_fields: tuple[Field, ...] = field(default=())
    form: tuple[Field, ...] = ()  # a multipart/form-data body, which the handler streams

    @property
    def key(self) -> str:
        """Its entry in the access table."""
        return f"{self.method} {self.path}"

    def route(self) -> web.RouteDef:
        handler = self.handler
        if self.method in _BODY_METHODS and not self.body and not self.form:
            # An endpoint that takes no body refuses one, rather than act and ignore it.
            act = handler

            async def handler(request: web.Request) -> web.StreamResponse:
                await body(request, ())
                return await act(request)

        return web.route(self.method, self.path, handler)


# -- reading requests -----------------------------------------------------------------------

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_INTEGER_TEXT: Final = re.compile(r"[+-]?\d{1,18}")
_NUMBER_TEXT: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _convert(spec: Field, value: object, from_text: bool) -> tuple[object, dict[str, str] | None]:
    """The value as `spec` wants it, or the problem with it."""
    name, kind = spec.name, spec.kind
    if from_text and isinstance(value, str):
        if kind is Kind.INTEGER and _INTEGER_TEXT.fullmatch(value):
            value = int(value)
        elif kind is Kind.NUMBER and _NUMBER_TEXT.fullmatch(value):
            value = float(value)
        elif kind is Kind.BOOLEAN and value.lower() in ("true", "false", "1", "0"):
            value = value.lower() in ("true", "1")
    if kind is Kind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, problem(name, "must be a whole number", "type")
    elif kind is Kind.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, problem(name, "must be a number", "type")
        if not math.isfinite(value):
            return value, problem(name, "must be a finite number", "type")
        value = float(value)
    elif kind is Kind.BOOLEAN and not isinstance(value, bool):
        return value, problem(name, "must be true or false", "type")
    elif kind is Kind.STRING and not isinstance(value, str):
        return value, problem(name, "must be text", "type")
    elif kind is Kind.STRINGS and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        return value, problem(name, "must be a list of text values", "type")
    return value, _limits(spec, value)


def _limits(spec: Field, value: Any) -> dict[str, str] | None:
    name = spec.name
    if spec.kind in (Kind.INTEGER, Kind.NUMBER):
        if spec.choices and value not in spec.choices:
            shown = ", ".join(str(choice) for choice in spec.choices)
            return problem(name, f"must be one of {shown}", "choice")
        if spec.minimum is not None and value < spec.minimum:
            return problem(name, f"must be at least {spec.minimum:g}", "range")
        if spec.maximum is not None and value > spec.maximum:
            return problem(name, f"must be at most {spec.maximum:g}", "range")
    elif spec.kind is Kind.STRING:
        if spec.min_length is not None and len(value) < spec.min_length:
            return problem(name, f"must be at least {spec.min_length} characters", "length")
        if spec.max_length is not None and len(value) > spec.max_length:
            return problem(name, f"must be at most {spec.max_length} characters", "length")
        if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
            return problem(name, "is not in the expected form", "pattern")
        if spec.choices and value not in spec.choices:
            shown = ", ".join(str(choice) for choice in spec.choices)
            return problem(name, f"must be one of {shown}", "choice")
    elif spec.kind is Kind.STRINGS:
        if spec.min_length is not None and len(value) < spec.min_length:
            return problem(name, f"must name at least {spec.min_length}", "length")
        if spec.max_length is not None and len(value) > spec.max_length:
            return problem(name, f"must name at most {spec.max_length}", "length")
        wrong = [v for v in value if spec.choices and v not in spec.choices]
        if wrong:
            shown = ", ".join(str(choice) for choice in spec.choices)
            return problem(name, f"must only hold {shown}", "choice")
    return None


def check(
    fields: Sequence[Field], given: Mapping[str, object], from_text: bool = False
) -> dict[str, Any]:
    """Every declared field, checked and typed (defaults filled in); unknown names refused."""
    values: dict[str, Any] = {}
    problems = [
        problem(name, "is not a known field", "unknown")
        for name in given
        if name not in {spec.name for spec in fields}
    ]
    for spec in fields:
        if spec.name not in given or (from_text and given[spec.name] is None):
            if spec.required:
                problems.append(problem(spec.name, "is required", "required"))
            values[spec.name] = spec.default
            continue
        value, wrong = _convert(spec, given[spec.name], from_text)
        if wrong is not None:
            problems.append(wrong)
        values[spec.name] = value
    if problems:
        names = ", ".join(p["field"] for p in problems)
        raise UserError(f"invalid request: {names}", details=problems)
    return values


async def body(request: web.Request, fields: Sequence[Field]) -> dict[str, Any]:
    """The JSON body, checked against `fields`."""
    raw = await request.read()
    # No body at all means no fields; a body of only blanks is not JSON, and is refused.
    if not raw:
        given: object = {}
    else:
        if request.content_type not in ("application/json", "application/octet-stream", ""):
            raise UserError(
                "the body must be JSON (Content-Type: application/json)",
                status=415,
                code="UNSUPPORTED_MEDIA_TYPE",
            )
        try:
            given = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise UserError("the body is not valid JSON") from None
    if not isinstance(given, dict):
        raise UserError("the body must be a JSON object")
    return check(fields, given)


def query(request: web.Request, fields: Sequence[Field]) -> dict[str, Any]:
    """The query string, checked against `fields`."""
    if any(len(request.query.getall(name)) > 1 for name in request.query):
        raise UserError("each query parameter may be given once")
    return check(fields, dict(request.query), from_text=True)


PAGE: Final = Field(
    "page", Kind.INTEGER, "Page number, from 1", minimum=1, maximum=1_000_000, default=1
)
LIMIT: Final = Field("limit", Kind.INTEGER, "Items per page", minimum=1, maximum=100, default=20)


# -- the OpenAPI description ---------------------------------------------------------------

_ENVELOPE_ERROR: Final = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        },
    },
}


def _success(data: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "data"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "data": data if data is not None else {},
            "meta": {"type": "object"},
        },
    }


def openapi(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """OpenAPI 3.1 for `endpoints`, with the access rule of each."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        requirement = ACCESS[endpoint.key]
        operation: dict[str, Any] = {
            "operationId": f"{endpoint.method.lower()}{_camel(endpoint.path)}",
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "responses": {},
        }
        if isinstance(requirement, Permission):
            operation["description"] = f"Needs the `{requirement.value}` permission."
            operation["security"] = [{"bearer": []}, {"apiKey": []}, {"cookie": []}]
        elif requirement is Open.SIGNED_IN:
            operation["description"] = "Needs any signed-in account."
            operation["security"] = [{"bearer": []}, {"apiKey": []}, {"cookie": []}]
        else:
            operation["security"] = []
        parameters = [
            {"name": spec.name, "in": "path", "required": True, "schema": spec.schema()}
            for spec in endpoint.path_fields
        ] + [
            {"name": spec.name, "in": "query", "required": spec.required, "schema": spec.schema()}
            for spec in endpoint.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body:
            operation["requestBody"] = {
                "required": any(spec.required for spec in endpoint.body),
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": [s.name for s in endpoint.body if s.required],
                            "properties": {s.name: s.schema() for s in endpoint.body},
                        }
                    }
                },
            }
        if endpoint.form:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": [s.name for s in endpoint.form if s.required],
                            "properties": {s.name: s.schema() for s in endpoint.form},
                        }
                    }
                },
            }
        for answer in endpoint.answers:
            if answer.media != "application/json":
                schema: dict[str, Any] = {"type": "string", "format": "binary"}
            else:
                schema = _success(answer.data) if answer.status < 400 else _ENVELOPE_ERROR
            operation["responses"][str(answer.status)] = {
                "description": answer.description,
                "content": {answer.media: {"schema": schema}},
            }
        for status, meaning in _COMMON_FAILURES:
            operation["responses"].setdefault(
                str(status),
                {
                    "description": meaning,
                    "content": {"application/json": {"schema": _ENVELOPE_ERROR}},
                },
            )
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LezerPrint",
            "version": __version__,
            "description": "Every answer is JSON in one envelope: "
            '{"success": true, "data": ..., "meta": ...} or '
            '{"success": false, "error": {"code", "message", "details"}}.',
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "lezerprint_access"},
            }
        },
    }


_COMMON_FAILURES: Final = (
    (400, "The request is not valid; `details` names each bad field"),
    (401, "Not signed in, or the token is expired or invalid"),
    (403, "The account's role does not allow this"),
    (404, "No such thing"),
    (405, "Method not allowed"),
    (
        409,
        "Not possible in the printer's or job's current state (CONFLICT), or the printer "
        "could not do it (PRINTER_ERROR)",
    ),
    (413, "The body is too large"),
    (415, "The body is not JSON, or an upload is not a kind of file the library takes"),
    (429, "Too many attempts; see Retry-After"),
    (500, "A bug: the daemon's log has details"),
)


def _camel(path: str) -> str:
    words = re.split(r"[^a-zA-Z0-9]+", path.replace("/api/", "/"))
    return "".join(word[:1].upper() + word[1:] for word in words if word)
