"""Check requests and responses against Cloudflare's official OpenAPI schema (openapi-subset.json).

Why it exists: the emulator is only useful if it answers like Cloudflare, and the provider is only
correct if it sends what Cloudflare accepts. Both are checked against the vendor's own schema rather
than against our reading of it.

How: the OpenAPI 3.0 document is turned into JSON Schema 2020-12 once per direction and validated
with ``jsonschema`` + ``referencing`` (``$ref``s resolve inside the document):
* ``nullable: true`` becomes a ``"null"`` type/enum member (3.0 has no null type);
* ``readOnly`` properties are not required in requests, ``writeOnly`` ones not in responses (3.0
  rule) — e.g. a policy's ``id`` is required in responses only;
* ``format: date-time`` is checked (RFC 3339 with an offset);
* ``$ref`` siblings (e.g. ``iam_token_body``'s ``required``) apply, which is what the authors meant;
* path parameters and declared query parameters are validated too (query strings coerced to numbers;
  an array parameter is its repeated key's values, one value being a one-item array); a required query
  parameter that is missing, or a query parameter the operation does not declare, is an error;
* ``format: date`` accepts a full-date or an RFC 3339 date-time (audit logs v2 documents both).

Operations are found by matching the concrete path to a path template, literal segments winning
(``/tokens/verify`` over ``/tokens/{token_id}``). Paths the schema does not cover (provisioning
previews, protected resource endpoints), statuses it has no schema for (5xx) and dropped connections
are *skipped*, and the result says so. One known schema/live-API disagreement is tolerated unless
``strict=True``: throttling answers carry code 971, below the schema's ``minimum: 1000``.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_PATH = Path(__file__).resolve().parents[1] / "data" / "cloudflare" / "openapi-subset.json"
_BASE = "urn:cloudflare-openapi-subset"
_PREFIX = "/client/v4"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(re.sub(r"\.\d+", "", value).upper().replace("Z", "+00:00"))
    return True


@FORMATS.checks("date", raises=ValueError)
def _date(value: object) -> bool:
    """A full-date, or an RFC 3339 date-time: audit-log v2's since/before say `format: date` while their
    descriptions allow "an absolute timestamp that conforms to RFC3339" too, and the API takes both."""
    if not isinstance(value, str):
        return True
    if re.match(r"^\d{4}-\d{2}-\d{2}$", value):
        datetime.fromisoformat(value)
        return True
    return _date_time(value)


def _coerce(schema: Any, value: Any) -> Any:
    """A query string as the number its schema declares; left as a string if it is not one (the type
    check then reports it)."""
    if isinstance(value, str) and schema.get("type") in ("number", "integer"):
        with contextlib.suppress(ValueError):
            return float(value) if "." in value else int(value)
    return value


@dataclass(frozen=True)
class Validation:
    what: str  # "GET /accounts/{account_id}/tokens request" etc.
    errors: tuple[str, ...] = ()
    skipped: str | None = None  # why nothing was validated

    @property
    def ok(self) -> bool:
        return not self.errors


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


class Schema:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._docs = {
            mode: self._convert(doc, "readOnly" if mode == "request" else "writeOnly")
            for mode in ("request", "response")
        }
        self._registries = {
            mode: Registry().with_resource(
                _BASE, Resource.from_contents(d, default_specification=DRAFT202012)
            )
            for mode, d in self._docs.items()
        }
        routes = []
        for template in doc["paths"]:
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "([^/]+)", re.escape(template)) + "$")
            routes.append((template.count("{"), template, pattern))
        self._routes = sorted(routes)  # fewest parameters first: literal segments win

    # --- OpenAPI 3.0 -> JSON Schema ------------------------------------------------------------------------
    def _resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/"):
            flags = {k: v for k, v in node.items() if k in ("readOnly", "writeOnly")}
            target: Any = self.doc
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            if flags:
                return flags
            node = target
        return node

    def _convert(self, node: Any, hidden: str) -> Any:
        if isinstance(node, list):
            return [self._convert(item, hidden) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: self._convert(value, hidden) for key, value in node.items()}
        if out.pop("nullable", False) is True:
            if isinstance(out.get("type"), str):
                out["type"] = [out["type"], "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            if "$ref" in out and "type" not in out:
                out = {"anyOf": [out, {"type": "null"}]}
        props = node.get("properties")
        if isinstance(node.get("required"), list) and isinstance(props, dict):
            out["required"] = [r for r in node["required"] if not self._resolve(props.get(r, {})).get(hidden)]
        return out

    # --- lookup -------------------------------------------------------------------------------------------
    def find(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """(template, path parameters) of the operation serving ``method path``, if the schema has one."""
        path = path.split("?", 1)[0]
        path = path[len(_PREFIX) :] if path.startswith(_PREFIX + "/") else path
        for _, template, pattern in self._routes:
            match = pattern.match(path)
            if match and method.lower() in self.doc["paths"][template]:
                names = re.findall(r"\{([^}]+)\}", template)
                given = {} if path == template else dict(zip(names, match.groups(), strict=True))
                return template, given
        return None

    def _check(self, mode: str, pointer: str, instance: Any) -> list[ValidationError]:
        validator = Draft202012Validator(
            {"$ref": f"{_BASE}#{pointer}"}, registry=self._registries[mode], format_checker=FORMATS
        )
        return list(validator.iter_errors(instance))

    @staticmethod
    def _describe(errors: list[ValidationError], where: str = "") -> list[str]:
        return [f"{where}{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]

    # --- public -------------------------------------------------------------------------------------------
    def validate_request(
        self, method: str, path: str, body: Any, query: dict[str, Any] | None = None
    ) -> Validation:
        found = self.find(method, path)
        if found is None:
            return Validation(
                f"{method} {path} request", skipped="path not in openapi-subset.json; not validated"
            )
        template, params = found
        what, op_ptr = f"{method} {template} request", f"/paths/{_escape(template)}/{method.lower()}"
        operation = self.doc["paths"][template][method.lower()]
        errors: list[str] = []
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        if declared:  # an operation that declares its query parameters takes no others
            errors += [
                f"query parameter {k}: not declared by this operation"
                for k in (query or {})
                if k not in declared
            ]
        for i, param in enumerate(operation.get("parameters", [])):
            value: Any = (params if param["in"] == "path" else query or {}).get(param["name"])
            if value is None:
                if param.get("required") and param["in"] == "query":
                    errors.append(f"query parameter {param['name']}: required")
                continue
            schema = self._resolve(param["schema"])
            if schema.get("type") == "array":  # explode: true, the key repeats; one value is a 1-list
                items = value if isinstance(value, list) else [value]
                value = [_coerce(self._resolve(schema.get("items", {})), item) for item in items]
            else:
                value = _coerce(schema, value)
            found_errors = self._check("request", f"{op_ptr}/parameters/{i}/schema", value)
            errors += self._describe(found_errors, f"{param['in']} parameter {param['name']}: ")
        request_body = operation.get("requestBody")
        if request_body is None:
            if body is not None:
                errors.append("<root>: this operation takes no request body")
        elif body is None:
            if request_body.get("required"):
                errors.append("<root>: a request body is required")
        else:
            errors += self._describe(
                self._check("request", f"{op_ptr}/requestBody/content/application~1json/schema", body)
            )
        return Validation(what, tuple(errors))

    def validate_response(
        self, method: str, path: str, status: int | None, body: Any, *, strict: bool = False
    ) -> Validation:
        found = self.find(method, path)
        if found is None:
            return Validation(
                f"{method} {path} response", skipped="path not in openapi-subset.json; not validated"
            )
        template = found[0]
        what = f"{method} {template} response {status}"
        if status is None:
            return Validation(what, skipped="connection dropped: there is no response to validate")
        responses = self.doc["paths"][template][method.lower()]["responses"]
        key = next((k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None)
        if key is None:
            return Validation(
                what, skipped=f"the schema declares no response for status {status}; not validated"
            )
        pointer = (
            f"/paths/{_escape(template)}/{method.lower()}/responses/{key}/content/application~1json/schema"
        )
        errors = self._check("response", pointer, body)
        if not strict:  # the live API answers 429 with code 971 although the schema says minimum 1000
            errors = [
                e for e in errors if not (status == 429 and e.validator == "minimum" and e.instance == 971)
            ]
        return Validation(what, tuple(self._describe(errors)))

    def validate_exchange(self, exchange: Any, *, strict: bool = False) -> tuple[Validation, Validation]:
        """Both halves of a recorded ``cfemulator.Exchange`` (or any 6-tuple of the same shape)."""
        method, path, query, request, status, response = exchange
        return (
            self.validate_request(method, path, request, query),
            self.validate_response(method, path, status, response, strict=strict),
        )


@cache
def default() -> Schema:
    return Schema(json.loads(DOC_PATH.read_text()))


def validate_request(method: str, path: str, body: Any, query: dict[str, Any] | None = None) -> Validation:
    return default().validate_request(method, path, body, query)


def validate_response(
    method: str, path: str, status: int | None, body: Any, *, strict: bool = False
) -> Validation:
    return default().validate_response(method, path, status, body, strict=strict)


def validate_exchange(exchange: Any, *, strict: bool = False) -> tuple[Validation, Validation]:
    return default().validate_exchange(exchange, strict=strict)


def assert_exchanges_valid(exchanges: list[Any], *, strict: bool = False) -> tuple[int, int]:
    """Raise AssertionError listing every violation; return (validated, skipped) half-exchange counts."""
    results = [v for ex in exchanges for v in validate_exchange(ex, strict=strict)]
    problems = [f"{v.what}: {err}" for v in results for err in v.errors]
    assert not problems, "schema violations:\n" + "\n".join(problems)
    skipped = sum(1 for v in results if v.skipped)
    return len(results) - skipped, skipped
