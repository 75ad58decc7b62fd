"""The dependency rules of docs/ARCHITECTURE.md, checked on the source: recipes are thin scripts (no sys.path
edits, no recipe imports another), ``nlprobust.core`` imports nothing else of the project, and
``nlprobust.vision`` and ``negotiation`` import only ``nlprobust.core`` of nlprobust."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_recipes_are_thin_scripts() -> None:
    recipes = sorted((ROOT / "recipes").glob("*.py"))
    names = {p.stem for p in recipes}
    assert recipes
    for p in recipes:
        assert "sys.path" not in p.read_text(encoding="utf-8"), p.name
        assert not names & {m.split(".")[0] for m in _imports(p)}, f"{p.name} imports another recipe"


def test_domain_packages_import_only_the_core() -> None:
    for folder, allowed in ((ROOT / "nlprobust" / "core", ("nlprobust.core",)),
                            (ROOT / "nlprobust" / "vision", ("nlprobust.core", "nlprobust.vision")),
                            (ROOT / "negotiation", ("nlprobust.core", "negotiation"))):
        for p in folder.rglob("*.py"):
            bad = [m for m in _imports(p) if m.split(".")[0] in ("nlprobust", "negotiation")
                   and not any(m == a or m.startswith(a + ".") for a in allowed)]
            assert not bad, f"{p.relative_to(ROOT)} imports {bad}"
