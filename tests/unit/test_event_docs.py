"""The README's example of every event type is valid against the OpenAPI document's components,
and every type has one: what users read and what the service describes cannot drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema_rs

from waservice.api.app import create_app
from waservice.events.model import TYPES

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_events() -> list[dict]:
    text = README.read_text()
    start = text.index("\n## Events")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.S)]
    return [b for b in blocks if isinstance(b, dict) and {"id", "type", "data"} <= set(b)]


async def event_validator(manager) -> jsonschema_rs.Validator:
    doc = await (await create_app(manager).test_client().get("/openapi.json")).get_json()
    return jsonschema_rs.Draft202012Validator(
        {"$ref": "#/components/schemas/Event", "components": doc["components"]}
    )


async def test_every_type_has_a_valid_example_in_the_readme(manager):
    validator = await event_validator(manager)
    examples = readme_events()
    for example in examples:
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (example["type"], errors)
    assert sorted(e["type"] for e in examples) == sorted(TYPES)


async def test_a_wrong_example_is_caught(manager):
    validator = await event_validator(manager)
    good = next(e for e in readme_events() if e["type"] == "message.ack")
    bad = {**good, "data": {**good["data"], "status": "seen"}}
    assert validator.is_valid(good) and not validator.is_valid(bad)
