"""The docs stay true to the code: every config key is in the schema with a description, and
config/README.md explains it; the README's commands are the ones CI runs; the README stays a
start (at most 8 KB) and its guides live in docs/; every relative link of README.md and
docs/*.md reaches a file (and heading); docs/files.md holds the HDF5 layout as the code
renders it (regenerate it with `python tests/test_docs.py`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
README_MAX_BYTES = 8000  # "at most 8 KB" read the strict way: 8,000 bytes, not 8,192
FILES_MD = REPO / "docs" / "files.md"
LAYOUT_BEGIN = "<!-- describe_schemas() begins: generated, do not edit -->"
LAYOUT_END = "<!-- describe_schemas() ends -->"
POST_URL = "https://hughmcdougall.github.io/blog/02_numpyro/06_SVI/01_part1/page.html"


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
    undescribed = [path for path, node in _keys(SCHEMA) if "description" not in node and "$ref" not in node]
    assert undescribed == []


def test_every_schema_key_is_in_config_readme():
    text = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    missing = [
        path for path, _ in _keys(SCHEMA) if f"`{path}`" not in text and path.split(".")[-1] not in text
    ]
    assert missing == []


def test_default_config_is_valid_against_the_schema():
    import jsonschema

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(config)


def test_ci_runs_the_readme_test_command():
    readme = README.read_text(encoding="utf-8").splitlines()
    commands = [line for line in readme[:20] if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the README starts with the run command and the test command"
    assert commands[0].endswith("snakemake --cores 4")
    assert commands[1].endswith("pytest")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "grep -m1 '^python3 -m venv .* pytest' README.md" in ci


# --- the README is a start, the guides are in docs/ --------------------------------------------


def test_readme_is_at_most_8_kb():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, more than {README_MAX_BYTES}: it starts the user (the two "
        f"commands, what sviflow is, the DAG, a short tour); move the rest to docs/"
    )


def test_readme_links_every_doc_and_the_post():
    text = README.read_text(encoding="utf-8")
    assert DOCS, "docs/ holds the guides"
    unlinked = [doc.name for doc in DOCS if f"(docs/{doc.name}" not in text]
    assert unlinked == [], "every page of docs/ is linked from the README"
    # the post is linked where it is first named
    first = text.index("Stochastic Variational Inference Part 1")
    assert POST_URL in text[first : first + 400]


# --- links ---------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """Markdown without its code: links inside code blocks and spans are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = _slug(heading.group(1))
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """Every relative link of a Markdown file whose file (or heading) does not exist."""
    broken = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{path.relative_to(root)}: {target} (no file {file_part})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(
                f"{path.relative_to(root)}: {target} (no heading #{anchor} in {resolved.relative_to(root)})"
            )
    return broken


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "b.md").write_text("# A heading, with `code`\n## Twice\n## Twice\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#a-heading-with-code) [twice](b.md#twice-1) [web](https://x.org/y)"
        " `[code](nowhere.md)` [gone](missing.md) [bad](b.md#nothing)\n"
        "```\n[fenced](nowhere.md)\n```\n"
    )
    broken = broken_links(page, root=tmp_path)
    assert len(broken) == 2 and "missing.md" in broken[0] and "#nothing" in broken[1]


# --- the HDF5 layout, documented from the code -----------------------------------------------


def rendered_files_md(text: str) -> str:
    """docs/files.md with its layout block replaced by what sviflow.h5io renders now."""
    from sviflow.h5io import describe_schemas

    begin, end = text.index(LAYOUT_BEGIN) + len(LAYOUT_BEGIN), text.index(LAYOUT_END)
    return text[:begin] + "\n\n" + describe_schemas().strip() + "\n\n" + text[end:]


def test_files_md_holds_the_layout_the_code_defines():
    text = FILES_MD.read_text(encoding="utf-8")
    assert LAYOUT_BEGIN in text and LAYOUT_END in text
    assert text == rendered_files_md(text), (
        "docs/files.md's HDF5 layout differs from sviflow.h5io.describe_schemas(): "
        "run `python tests/test_docs.py` to regenerate it"
    )


if __name__ == "__main__":  # regenerate the layout block of docs/files.md
    FILES_MD.write_text(rendered_files_md(FILES_MD.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {FILES_MD.relative_to(REPO)}")
