"""The published event contract: one JSON Schema per event type and version, committed under
contracts/schemas/, and the compatibility check that keeps a published version from breaking.

    python -m contracts.schema --write   # write missing/updated schemas and contracts/asyncapi.json
    python -m contracts.schema --check   # exit 1 if a version broke or a committed file is stale

A published version may only grow: new optional fields and new enum values. Removing or retyping
a field, adding a required one, narrowing an enum or a bound breaks it (the stream keeps 400
days of history that consumers replay); raise the event's ``version`` instead, which writes a
new file next to the old one. Old files are never rewritten or deleted.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.asyncapi import asyncapi_document
from contracts.envelope import envelope_model
from contracts.events import EVENTS, Event

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ASYNCAPI_FILE = Path(__file__).resolve().parent / "asyncapi.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "python -m contracts.schema --write"

def schema_for(cls: type[Event]) -> dict[str, Any]:
    schema = envelope_model(cls).model_json_schema()
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:ensemble:schema:{cls.ce_type()}",
        **schema,
        "title": cls.ce_type(),
        "x-ensemble-internal": cls.internal,
    }


def schema_path(ce_type: str, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{ce_type}.json"


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- compatibility ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A JSON Schema reduced to what compatibility depends on (pydantic's output shapes)."""

    types: frozenset[str]
    enum: frozenset[Any] | None = None  # None: any value of the types
    format: str | None = None
    properties: tuple[tuple[str, "Shape"], ...] = ()
    required: frozenset[str] = frozenset()
    items: "Shape | None" = None
    values: "Shape | None" = None  # additionalProperties given as a schema (dicts)
    bounds: tuple[tuple[str, Any], ...] = ()


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
           "maxLength", "minItems", "maxItems", "pattern")
_LOWER = {"minimum", "exclusiveMinimum", "minLength", "minItems"}


def shape(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Shape:
    root = root if root is not None else schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return shape(target, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _union([shape(s, root) for s in schema[key]])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return shape(schema["allOf"][0], root)
    types = schema.get("type")
    enum = schema.get("enum")
    if "const" in schema:
        enum = [schema["const"]]
    if types is None:
        types = sorted({_json_type(v) for v in enum}) if enum else ["any"]
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    items = schema.get("items")
    return Shape(
        types=frozenset([types] if isinstance(types, str) else types),
        enum=frozenset(enum) if enum is not None else None,
        format=schema.get("format"),
        properties=tuple(sorted((k, shape(v, root)) for k, v in props.items())),
        required=frozenset(schema.get("required", ())),
        items=shape(items, root) if isinstance(items, dict) else None,
        values=shape(extra, root) if isinstance(extra, dict) else None,
        bounds=tuple((k, schema[k]) for k in _BOUNDS if k in schema),
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "object"


def _union(parts: list[Shape]) -> Shape:
    """Merge ``X | None`` and similar unions: their types, values and properties together."""
    enums = [p.enum for p in parts if "null" not in p.types or len(p.types) > 1]
    enum = None if any(e is None for e in enums) else frozenset().union(*enums)
    if enum is not None and any(p.types == {"null"} for p in parts):
        enum = enum | {None}
    props: dict[str, Shape] = {}
    for p in parts:
        props.update(dict(p.properties))
    formats = {p.format for p in parts if p.format}
    return Shape(
        types=frozenset().union(*(p.types for p in parts)),
        enum=enum,
        format=formats.pop() if len(formats) == 1 else None,
        properties=tuple(sorted(props.items())),
        required=frozenset().union(*(p.required for p in parts if "object" in p.types)),
        items=next((p.items for p in parts if p.items), None),
        values=next((p.values for p in parts if p.values), None),
        bounds=tuple(b for p in parts for b in p.bounds),
    )


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why ``new`` cannot replace ``old`` under the same version; empty when it can."""
    problems: list[str] = []
    _compare(shape(old), shape(new), "", problems)
    return problems


def _compare(old: Shape, new: Shape, path: str, problems: list[str]) -> None:
    where = path or "(root)"
    if old.types != new.types:
        problems.append(f"{where}: type changed from {sorted(old.types)} to {sorted(new.types)}")
        return
    if old.format != new.format:
        problems.append(f"{where}: format changed from {old.format} to {new.format}")
    if old.enum is not None:
        if new.enum is None:
            pass  # widened to any value of the same type: old data still valid
        elif missing := old.enum - new.enum:
            problems.append(f"{where}: enum values removed: {sorted(map(str, missing))}")
    elif new.enum is not None:
        problems.append(f"{where}: narrowed to the values {sorted(map(str, new.enum))}")
    _compare_bounds(dict(old.bounds), dict(new.bounds), where, problems)
    old_props, new_props = dict(old.properties), dict(new.properties)
    for name, old_prop in old_props.items():
        child = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{child}: field removed")
            continue
        _compare(old_prop, new_props[name], child, problems)
    for name in sorted(new.required - old.required):
        child = f"{path}.{name}" if path else name
        problems.append(
            f"{child}: new required field" if name not in old_props
            else f"{child}: optional field became required"
        )
    for attr in ("items", "values"):
        before, after = getattr(old, attr), getattr(new, attr)
        if before is not None and after is not None:
            _compare(before, after, f"{path}[]", problems)
        elif before is not None or after is not None:
            problems.append(f"{where}: {attr} schema changed")


def _compare_bounds(old: dict[str, Any], new: dict[str, Any], where: str,
                    problems: list[str]) -> None:
    for key, value in new.items():
        before = old.get(key)
        if key == "pattern":
            if before != value:
                problems.append(f"{where}: pattern changed to {value!r}")
        elif before is None:
            problems.append(f"{where}: new bound {key}={value}")
        elif (value > before) if key in _LOWER else (value < before):
            problems.append(f"{where}: {key} narrowed from {before} to {value}")


# --- the committed files ---------------------------------------------------------------------


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Problems with the committed contract, each telling the developer what to do."""
    problems: list[str] = []
    for ce_type, cls in sorted(EVENTS.items()):
        path = schema_path(ce_type, directory)
        current = schema_for(cls)
        if not path.exists():
            problems.append(f"{ce_type}: no committed schema {path.name}; run `{REGENERATE}`")
            continue
        committed = json.loads(path.read_text())
        broken = breaking_changes(committed, current)
        if broken:
            problems.append(
                f"{ce_type}: breaking change to a published version ({'; '.join(broken)}). "
                f"Raise {cls.__name__}.version to {cls.version + 1} (a new schema file is "
                f"written; {path.name} stays), or undo the change. Only if this version was "
                f"never released: delete {path.name} and run `{REGENERATE}`"
            )
        elif dumps(committed) != dumps(current):
            problems.append(f"{ce_type}: {path.name} is out of date; run `{REGENERATE}`")
    return problems


def write(directory: Path = SCHEMA_DIR, asyncapi_file: Path = ASYNCAPI_FILE) -> list[str]:
    """Write what changed compatibly; never overwrite a version with a breaking change."""

    refused = [p for p in check(directory) if "breaking change" in p]
    directory.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for ce_type, cls in sorted(EVENTS.items()):
        if any(p.startswith(f"{ce_type}:") for p in refused):
            continue
        path = schema_path(ce_type, directory)
        text = dumps(schema_for(cls))
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path.name)
    text = dumps(asyncapi_document())
    if not asyncapi_file.exists() or asyncapi_file.read_text() != text:
        asyncapi_file.write_text(text)
        written.append(asyncapi_file.name)
    for name in written:
        print(f"wrote {name}")
    return refused


def check_asyncapi(asyncapi_file: Path = ASYNCAPI_FILE) -> list[str]:

    if not asyncapi_file.exists() or asyncapi_file.read_text() != dumps(asyncapi_document()):
        return [f"{asyncapi_file.name} is missing or out of date; run `{REGENERATE}`"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.schema", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write new and updated files")
    mode.add_argument("--check", action="store_true", help="fail on breaking or stale files")
    args = parser.parse_args(argv)
    # Module globals read at call time, so a test can point them at a scratch directory.
    if args.write:
        problems = write(SCHEMA_DIR, ASYNCAPI_FILE)
    else:
        problems = check(SCHEMA_DIR) + check_asyncapi(ASYNCAPI_FILE)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
