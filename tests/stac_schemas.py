"""Offline STAC validation against the schemas vendored in ``tests/data/stac_schemas``.

``core/`` and ``geojson/`` are the STAC 1.1.0 item schemas shipped inside pystac 1.15
(``pystac/validation/jsonschemas``); ``extensions/`` are minimal schemas written from the
extension specs (classification 2.0.0, projection 2.0.0, raster 1.1.0, file 2.1.0,
processing 1.2.0, mlm 1.4.0): no registry package ships them and the tests must not download.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas"
CORE = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/"


def _registry() -> Registry:
    resources = []
    for path in (SCHEMAS / "core").glob("*.json"):
        resources.append((CORE + path.name, Resource.from_contents(json.loads(path.read_text()))))
    for path in (SCHEMAS / "geojson").glob("*.json"):
        uri = f"https://geojson.org/schema/{path.name}"
        resources.append((uri, Resource.from_contents(json.loads(path.read_text()))))
    for path in (SCHEMAS / "extensions").glob("*.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def validation_errors(item: dict[str, Any]) -> list[str]:
    """Every schema error of an item: the core item schema and each declared extension."""
    registry = _registry()
    uris = [CORE + "item.json", *item.get("stac_extensions", [])]
    errors = []
    for uri in uris:
        try:
            schema = registry.contents(uri)
        except LookupError:
            errors.append(f"{uri}: no vendored schema")
            continue
        validator = Draft7Validator(schema, registry=registry)
        errors += [f"{uri}: {e.json_path}: {e.message}" for e in validator.iter_errors(item)]
    return errors
