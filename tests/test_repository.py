"""The repository's own rules: it cites nothing it does not hold, the layers import in one direction,
and library functions stay short (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("leaderboard/site/", "leaderboard/results/")  # rendered output, checked through its sources

# References to notes that live outside the repository: planning documents, issue numbers of a private
# tracker, a sibling folder. The bracketed letters keep these patterns from matching this file itself.
OUTSIDE_REFERENCES = re.compile(
    r"\bS[P]EC\b"                 # the planning spec, in any form ("... section 7", "....md")
    r"|\bDESIG[N]\b"              # the design notes
    r"|SYNTHETI[C]\.md|\bSYNTHETI[C]\b"
    r"|ENVIRONMEN[T]\.md"
    r"|\.\./share[d]\b"
    r"|\b[Ii]ssu[e][- ][0-9]"     # a bare issue number; an upstream project's "issue #N" is a real link
)

LIBRARY_PACKAGES = ("gcl_eval", "trainers", "baselines", "leaderboard")
ENGINE_PACKAGES = {"baselines", "trainers", "leaderboard"}
COMPOSITION_ROOT = ("gcl_eval/experiments/", "gcl_eval/commands/", "gcl_eval/cli.py", "gcl_eval/__main__.py")
MAX_FUNCTION_LINES = 80


def _repository_files() -> list[str]:
    """Files git tracks or would track (untracked but not ignored), relative to the root."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip(f"git ls-files failed: {listed.stderr.decode(errors='replace').strip()}")
    names = [n for n in listed.stdout.decode().split("\0") if n]
    return [n for n in names if not n.startswith(GENERATED) and (ROOT / n).is_file()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _python_files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute import in a module, top-level or inside a function: (line, module name)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_file_cites_documents_outside_the_repository():
    offenders = []
    for name in _repository_files():
        text = _text(ROOT / name)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            match = OUTSIDE_REFERENCES.search(line)
            if match:
                offenders.append(f"{name}:{lineno}: {match.group(0)!r} in {line.strip()[:100]}")
    assert not offenders, "cites documents the repository does not hold:\n" + "\n".join(offenders)


def test_the_core_imports_no_engine_and_no_composition_root():
    offenders = []
    for path in _python_files("gcl_eval"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(COMPOSITION_ROOT):
            continue
        for lineno, module in _imported_modules(ast.parse(path.read_text(), filename=rel)):
            top = module.split(".")[0]
            if top in ENGINE_PACKAGES or module.startswith(("gcl_eval.experiments", "gcl_eval.commands")):
                offenders.append(f"{rel}:{lineno}: imports {module}")
    assert not offenders, "the gcl_eval core must not import these (docs/architecture.md):\n" + "\n".join(offenders)


def test_measures_never_import_torch():
    offenders = []
    for path in _python_files("gcl_eval/measures") + [ROOT / "gcl_eval" / "metrics.py"]:
        rel = path.relative_to(ROOT).as_posix()
        for lineno, module in _imported_modules(ast.parse(path.read_text(), filename=rel)):
            if module.split(".")[0] == "torch":
                offenders.append(f"{rel}:{lineno}: imports {module}")
    assert not offenders, "gcl_eval.measures is pure numpy:\n" + "\n".join(offenders)
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, gcl_eval.metrics, gcl_eval.measures.trec, gcl_eval.measures.stats; "
                               "print('torch' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False", "importing the measures loaded torch"


def test_no_library_function_is_longer_than_80_lines():
    too_long = []
    for path in _python_files(*LIBRARY_PACKAGES):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno}: {node.name} has {length} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)
