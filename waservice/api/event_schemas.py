"""The events as OpenAPI components: `Event` is the envelope every webhook and stream consumer gets,
one variant per type (discriminated by `type`), each with its own `data` component."""

from __future__ import annotations

from typing import Any

import msgspec

from ..events.model import TYPES
from ..events.types import DATA

REF = "#/components/schemas/{name}"


def event_components() -> dict[str, Any]:
    """Schemas to merge into the document's components."""
    _, components = msgspec.json.schema_components([DATA[t] for t in TYPES], ref_template=REF)
    variants: dict[str, str] = {}
    for type_ in TYPES:
        data = DATA[type_].__name__
        name = f"{data}Event"
        components[name] = {
            "type": "object",
            "description": f"The envelope of a `{type_}` event.",
            "required": ["id", "type", "session_id", "timestamp", "data"],
            "properties": {
                "id": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Log id: increases with every event; webhook-id, the SSE id and "
                    "`after` use it. Redelivered events keep their id.",
                },
                "type": {"type": "string", "const": type_},
                "session_id": {"type": "string"},
                "timestamp": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When it happened, ISO-8601 UTC with milliseconds.",
                },
                "data": {"$ref": REF.format(name=data)},
            },
        }
        variants[type_] = REF.format(name=name)
    components["Event"] = {
        "description": "What webhooks receive (the POST body) and GET /events streams (each `data:` line).",
        "oneOf": [{"$ref": ref} for ref in variants.values()],
        "discriminator": {"propertyName": "type", "mapping": variants},
    }
    return components
