"""The README runs as written.

Every ```python block of README.md is run, each in a fresh namespace and in a temporary
directory; a block whose framework is not installed is skipped. Code that must not run goes in
a ```text, ```bash or ```toml block. Tracebacks point at the README's own line numbers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 250

FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")

#: diffstride front-ends and the framework each one imports.
FRONT_ENDS = {"diffstride.torch": "torch", "diffstride.tf": "tensorflow", "diffstride.jax": "jax"}
#: The label of a block, from the first framework it needs (else "numpy").
LABELS = {"torch": "torch", "tensorflow": "tf", "keras": "tf", "jax": "jax", "optax": "jax"}


def python_blocks() -> list[tuple[int, str]]:
    """``(first line number, code)`` of each ```python block, in order."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def needed_modules(code: str) -> list[str]:
    """The modules a block needs: what it imports, and the framework behind a front-end."""
    modules = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            for front_end, framework in FRONT_ENDS.items():
                if name == front_end or name.startswith(front_end + "."):
                    modules.append(framework)
            top = name.split(".")[0]
            if top != "diffstride":
                modules.append(top)
    return list(dict.fromkeys(modules))


def label(code: str) -> str:
    return next((LABELS[m] for m in needed_modules(code) if m in LABELS), "numpy")


BLOCKS = python_blocks()


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python block"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines; at most {MAX_LINES}"


@pytest.mark.parametrize(
    ("line", "code"),
    BLOCKS,
    ids=[f"block-{i}-{label(code)}" for i, (_, code) in enumerate(BLOCKS, start=1)],
)
def test_readme_block_runs(line, code, tmp_path, monkeypatch):
    for module in needed_modules(code):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    # Leading newlines make tracebacks show README.md's line numbers.
    compiled = compile("\n" * (line - 1) + code, str(README), "exec")
    exec(compiled, {"__name__": "__readme__"})


def relative_links() -> list[str]:
    text = README.read_text(encoding="utf-8")
    links = (link.split("#")[0] for link in LINK.findall(text))
    return sorted({link for link in links if link and "://" not in link})


@pytest.mark.parametrize("link", relative_links())
def test_readme_link_exists(link):
    assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"
