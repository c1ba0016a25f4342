"""The collector's OpenAPI document: Litestar's, with the bodies, answers and examples of the
three public routes (``/v1/events``, ``/v1/beacon``, ``/go/{slug}``).

The handlers read their bodies themselves (msgspec, one decoder per route), so Litestar cannot
see their shapes: each route's ``operation_class`` adds them, from the same msgspec structs the
decoders use (``msgspec.json.schema_components``), so the document cannot drift from what is
accepted. Served at ``/_openapi/openapi.json`` on the collector's own port only: nginx answers
404 for every path it does not forward (``ops/nginx/pixelrelay.conf``). ``pixelrelay openapi``
prints the same document without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any, cast

import msgspec
from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from collector.ingest import BeaconEvent
from relay.events import MAX_PASSTHROUGH_BYTES, InboundEvent

OPENAPI_PATH = "/_openapi"
JSON = "application/json"
_ERROR = {"type": "object", "required": ["error"], "additionalProperties": False,
          "properties": {"error": {"type": "string", "description": "One sentence."}}}
_ACCEPTED = {"type": "object", "required": ["accepted", "event_ids"],
             "properties": {"accepted": {"type": "integer", "minimum": 0},
                            "event_ids": {"type": "array", "items": {"type": "string"}}}}

EVENT_EXAMPLE = {
    "event_name": "Purchase",
    "event_id": "order-1001",
    "action_source": "website",
    "event_source_url": "https://shop.example/checkout/done",
    "user_data": {"em": "someone@example.com", "client_user_agent": "Mozilla/5.0"},
    "custom_data": {"value": 49.9, "currency": "EUR", "order_id": "1001"},
}
BEACON_EXAMPLE = {"pixel_id": "1234567890", "event_name": "ViewContent", "event_id": "vc-1"}


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with every ``$ref`` replaced by its definition (the structs have no cycles).

    Litestar rebuilds ``components.schemas`` from its own registry, so references into it
    would dangle: the bodies are written out in full instead.
    """
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(definitions[schema["$ref"].rsplit("/", 1)[1]], definitions)
        return {k: _inline(v, definitions) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, definitions) for v in schema]
    return schema


def _body_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON Schemas of the /v1/events and /v1/beacon bodies, from their msgspec decoders'
    types."""
    (events, beacon), definitions = msgspec.json.schema_components(
        [InboundEvent | list[InboundEvent], BeaconEvent], schema_hook=_any_json_value)
    # Fields the struct does not name pass through to Meta (relay.events.inbound_event), so
    # the event takes more properties than it lists; passthrough is where they go, not a field.
    event = definitions["InboundEvent"]
    event["properties"].pop("passthrough", None)
    event["additionalProperties"] = {
        "description": "any other field of Meta's server event, passed through unchanged "
                       f"(at most {MAX_PASSTHROUGH_BYTES} bytes per event)"}
    return _inline(events, definitions), _inline(beacon, definitions)


def _any_json_value(t: type) -> dict[str, Any]:
    if t is object:
        return {"description": "any JSON value"}
    raise TypeError(f"no JSON Schema for {t!r}")


def _json(schema: dict[str, Any], **examples: Any) -> dict[str, OpenAPIMediaType]:
    return {JSON: OpenAPIMediaType(
        schema=cast(Schema, schema),  # a plain JSON Schema: Litestar passes dicts through
        examples={name: Example(value=value) for name, value in examples.items()} or None)}


def _error(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(description=description, content=_json(_ERROR))


def _errors(*statuses: int) -> dict[str, OpenAPIResponse]:
    described = {
        400: "The body is empty or not JSON.",
        401: "No API key, or not a valid one.",
        403: "Not allowed: the API key may not send to that pixel, or the origin is not "
             "configured in collector.allowed_origins.",
        404: "No link with that slug.",
        405: "Method not allowed.",
        413: "The body is larger than collector.max_body_bytes.",
        422: "An event breaks a rule; the sentence names the field.",
        429: "Too many requests from this address (nginx).",
        503: "Neither Redis nor the disk spool can store the events now: retry after "
             "Retry-After seconds.",
    }
    return {str(s): _error(described[s]) for s in statuses}


@dataclass
class EventsOperation(Operation):
    def __post_init__(self) -> None:
        self.summary = "Send server events (one event or a list of up to 1,000)"
        self.description = ("Personal data may be raw or SHA-256 hashed: raw values are "
                            "normalized and hashed before anything is stored.")
        self.security = [{"bearer": []}]
        self.request_body = RequestBody(
            required=True, content=_json(_body_schemas()[0], one=EVENT_EXAMPLE,
                                         many=[EVENT_EXAMPLE]))
        self.responses = {
            "202": OpenAPIResponse(description="Stored durably (Redis or the fsynced spool).",
                                   content=_json(_ACCEPTED)),
            **_errors(400, 401, 403, 405, 413, 422, 429, 503),
        }


@dataclass
class BeaconOperation(Operation):
    def __post_init__(self) -> None:
        self.summary = "A browser event from pixelrelay.js (configured origins only)"
        self.request_body = RequestBody(
            required=True, content=_json(_body_schemas()[1], view=BEACON_EXAMPLE))
        self.responses = {
            "204": OpenAPIResponse(description="Stored, or ignored as a bot."),
            **_errors(400, 403, 405, 413, 422, 429, 503),
        }


@dataclass
class RedirectOperation(Operation):
    def __post_init__(self) -> None:
        for parameter in self.parameters or []:
            if isinstance(parameter, Parameter) and parameter.name == "slug":
                parameter.examples = {"link": Example(value="summer-sale")}
        self.parameters = [*(self.parameters or []), *(
            Parameter(name=name, param_in=ParamType.QUERY, required=False, description=text,
                      schema=Schema(type=OpenAPIType.STRING),
                      examples={"example": Example(value=value)})
            for name, text, value in _REDIRECT_QUERY)]
        self.summary = "A tracked link: records the click and redirects at once"
        self.description = ("Redirects only to the link's configured destination (its query "
                            "string forwarded if the link says so); sets _fbc, _fbp and _prclk. "
                            "Redirects even when nothing can store the click (it is then "
                            "not recorded, and _prclk not set).")
        self.responses = {
            "302": OpenAPIResponse(description="To the link's configured destination."),
            "404": OpenAPIResponse(description="No link with that slug (an HTML page).",
                                   content={"text/html": OpenAPIMediaType(
                                       schema=cast(Schema, {"type": "string"}))}),
            **_errors(405, 429),
        }


_REDIRECT_QUERY = (
    ("fbclid", "Meta's click id, kept byte for byte in the _fbc cookie.", "IwAR2xYz_example"),
    ("utm_source", "Kept with the click for attribution.", "facebook"),
)


def openapi_document() -> dict[str, Any]:
    """The document the collector serves, without a server, Redis or settings."""
    from litestar import Litestar

    from collector.app import ROUTES

    document: dict[str, Any] = Litestar(route_handlers=ROUTES, openapi_config=openapi_config(),
                                        debug=False).openapi_schema.to_schema()
    return document


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="pixelrelay collector", version=metadata.version("pixelrelay"), path=OPENAPI_PATH,
        render_plugins=[JsonRenderPlugin()],
        components=Components(
            security_schemes={"bearer": SecurityScheme(
                type="http", scheme="bearer", description="An API key from [[api_keys]].")}),
    )
