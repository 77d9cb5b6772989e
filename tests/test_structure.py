"""Where code sits: no import cycle between hvsearch's packages (imports inside functions
included: they hide a cycle, they do not remove it), and the families' configs stay torch-free."""
import ast
import subprocess
import sys
from pathlib import Path

import hvsearch

ROOT = Path(hvsearch.__file__).parent
PACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists())


def _package_imports() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the files that import it."""
    edges: dict[str, dict[str, set[str]]] = {p: {} for p in PACKAGES}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        if len(rel) < 2 or rel[0] not in edges:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "hvsearch" and len(parts) > 1 and parts[1] in edges and parts[1] != rel[0]:
                    edges[rel[0]].setdefault(parts[1], set()).add(str(path.relative_to(ROOT)))
    return edges


def test_no_import_cycle_between_packages():
    edges = _package_imports()
    # `families` is the registry's content: arch/layers/models load it and it uses them; what a
    # family imports is checked below instead
    graph = {a: {b for b in targets if b != "families"} for a, targets in edges.items() if a != "families"}

    def reaches(a, b, seen=frozenset()):
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph.get(a, ()))

    cycles = [(a, b, sorted(edges[a][b])) for a in graph for b in graph[a] if reaches(b, a)]
    assert not cycles, cycles
    assert set(graph["search"]) >= {"zerocost", "scaling"}  # the workflows use the others, not back
    for low in ("arch", "layers", "models", "cost", "scaling", "zerocost", "space", "train"):
        assert "search" not in graph[low], (low, edges[low].get("search"))


def test_a_family_uses_only_the_building_blocks():
    allowed = {"arch", "layers", "models"}
    for name, files in _package_imports()["families"].items():
        assert name in allowed, (name, sorted(files))


def test_family_configs_and_seed_names_load_without_torch():
    code = ("import sys\nimport hvsearch.arch, hvsearch.seed_names\n"
            "from hvsearch.families import family_names\n"
            "assert len(hvsearch.arch.component_types('mixer')) >= len(family_names())\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
