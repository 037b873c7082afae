"""The docs stay true to the code: every config key is in the schema with a description, and
config/README.md explains it; the README's commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _keys(node: dict, path: str = ""):
    """(dotted path, schema node) of every property, '<name>' for named entries."""
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        yield here, child
        yield from _keys(child, here)
    entry = node.get("additionalProperties")
    if isinstance(entry, dict) and entry.get("type") == "object":
        yield from _keys(entry, f"{path}.<name>")


def test_every_schema_key_is_described():
    undescribed = [path for path, node in _keys(SCHEMA) if "description" not in node
                   and "$ref" not in node]
    assert undescribed == []


def test_every_schema_key_is_in_config_readme():
    text = (REPO / "config" / "README.md").read_text()
    missing = [path for path, _ in _keys(SCHEMA)
               if f"`{path}`" not in text and path.split(".")[-1] not in text]
    assert missing == []


def test_default_config_is_valid_against_the_schema():
    import jsonschema

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(config)


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text().splitlines()
    commands = [line for line in readme[:20] if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the README starts with the run command and the test command"
    assert commands[0].endswith("snakemake --cores 4")
    assert commands[1].endswith("pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert "grep -m1 '^python3 -m venv .* pytest' README.md" in ci
