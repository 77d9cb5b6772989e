"""Every exception hvsearch raises on purpose is defined in hvsearch/errors.py: one hierarchy, one
place to read it (read from the source, without importing it)."""
from __future__ import annotations

import ast
from pathlib import Path

import hvsearch.errors as errors

PACKAGE = Path(errors.__file__).parent


def _exception_classes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            # a private one (``_Refused`` in yamlio) is caught in its module and never escapes
            if any(b.endswith(("Error", "Exception")) for b in bases) and not node.name.startswith("_"):
                found.append(node.name)
    return found


def test_exceptions_live_in_errors_py():
    elsewhere = {str(p.relative_to(PACKAGE)): names for p in sorted(PACKAGE.rglob("*.py"))
                 if p.name != "errors.py" and (names := _exception_classes(p))}
    assert elsewhere == {}
    defined = _exception_classes(PACKAGE / "errors.py")
    assert {"HVSearchError", "CalibrationError", "ScalingError", "UncountedOpError", "ScoreError"} <= set(defined)
    for name in defined:
        if name != "HVSearchError":
            assert issubclass(getattr(errors, name), errors.HVSearchError), name
