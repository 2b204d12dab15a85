"""The configuration reference (docs/configuration.md), generated from the schema.

    .venv/bin/python -m medaug.config_reference > docs/configuration.md

One table per top-level section: every key with its type, default and description, as
``schemas/config.schema.yaml`` has them (``tests/test_config.py`` keeps the file in sync).
"""

from __future__ import annotations

import json

from medaug.config import SCHEMA_PATH, load_schema

HEADER = """# Configuration reference

Every key of the configuration, its type, its default and what it does, generated from
`schemas/config.schema.yaml` by `python -m medaug.config_reference` (a test keeps this file
in sync). The defaults are the papers' values; `config.yaml` (the CPU demo) shrinks sizes,
steps and counts, and `config.paper.yaml`, read on top of it by `snakemake --profile slurm`,
sets them back. A wrong key or value stops the run before any job, naming the key.
"""


def _type(node: dict) -> str:
    kind = node.get("type", "object" if "properties" in node else "")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(k for k in kinds if k)
    if "enum" in node:
        text += ": " + ", ".join(f"`{value}`" for value in node["enum"])
    return text


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _rows(node: dict, prefix: str, defs: dict) -> list[str]:
    rows = []
    for name, sub in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        ref = sub.get("additionalProperties", {})
        if isinstance(ref, dict) and "$ref" in ref:
            target = defs[ref["$ref"].rsplit("/", 1)[1]]
            rows.append(f"| `{key}` | mapping of name to entry | | {_cell(sub.get('description', ''))} |")
            rows += _rows(target, f"{key}.<name>", defs)
            continue
        if "properties" in sub:
            rows.append(f"| `{key}` | section | | {_cell(sub.get('description', ''))} |")
            rows += _rows(sub, key, defs)
            continue
        default = json.dumps(sub.get("default"), ensure_ascii=False)
        rows.append(f"| `{key}` | {_cell(_type(sub))} | `{_cell(default)}` | {_cell(sub.get('description', ''))} |")
    return rows


def reference(schema: dict | None = None) -> str:
    """The Markdown reference of ``schema`` (default: the project's)."""
    schema = schema if schema is not None else load_schema(SCHEMA_PATH)
    defs = schema.get("$defs", {})
    parts = [HEADER]
    for name, section in schema["properties"].items():
        parts.append(f"## `{name}`\n")
        parts.append(_cell(section.get("description", "")) + "\n")
        parts.append("| key | type | default | description |\n|---|---|---|---|")
        ref = section.get("additionalProperties", {})
        if "properties" in section:  # the section's description is the paragraph above
            rows = _rows(section, name, defs)
        elif isinstance(ref, dict) and "$ref" in ref:
            rows = _rows(defs[ref["$ref"].rsplit("/", 1)[1]], f"{name}.<name>", defs)
        else:
            rows = _rows({"properties": {name: section}}, "", defs)
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
