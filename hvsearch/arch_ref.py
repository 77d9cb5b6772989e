"""One way to name an architecture, wherever one is named (``show``, ``train``, ``scale --seed``,
``timm.create_model("hvs_arch", arch=...)``, the zero-cost scores, the benchmarks):

* a catalog seed: ``cmt_s`` (``hvsearch seeds`` lists them);
* an architecture file: ``results/hybrid/best.yaml``, ``arch.json`` (anything ending in .yaml,
  .yml or .json, or an existing file);
* a trial of a search: ``STUDY:best`` or ``STUDY:<trial number>``, read from the study's storage
  (``studies/<STUDY>.db`` unless ``HVSEARCH_STORAGE`` gives an RDB URL or a SQLite path).

:func:`check` answers a wrong name without importing torch; :func:`resolve` returns the validated
:class:`~hvsearch.arch.ModelSpec`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hvsearch.seed_names import ARCH_SUFFIXES, check_arch_ref

if TYPE_CHECKING:
    from hvsearch.arch import ModelSpec


def is_study_ref(ref: str) -> bool:
    """``STUDY:best`` / ``STUDY:<n>``: a colon, and not a file name."""
    return ":" in ref and Path(ref).suffix not in ARCH_SUFFIXES and not Path(ref).exists()


def check(ref: str) -> None:
    """Raise a one-line :class:`~hvsearch.errors.HVSearchError` unless ``ref`` names a seed, an
    existing architecture file, or has the form of a study reference (its study is looked up by
    :func:`resolve`); cheap, no torch."""
    if is_study_ref(ref):
        from hvsearch.errors import StudyError

        name, _, which = ref.rpartition(":")
        if not name or not (which == "best" or which.isdigit()):
            raise StudyError(f"{ref!r}: a study's architecture is STUDY:best or STUDY:<trial number>")
        return
    check_arch_ref(ref)


def resolve(ref: "str | Path | ModelSpec", storage: str | None = None, studies_dir: str = "studies") -> "ModelSpec":
    """The architecture ``ref`` names (see the module docstring); a ModelSpec is returned as it is."""
    from hvsearch.arch import ModelSpec

    if isinstance(ref, ModelSpec):
        return ref
    ref = str(ref)
    check(ref)
    if is_study_ref(ref):
        from hvsearch.search.study_ref import load_study_arch

        return load_study_arch(ref, storage=storage, studies_dir=studies_dir)
    path = Path(ref)
    if path.suffix in ARCH_SUFFIXES or path.exists():
        return ModelSpec.load(path)
    from hvsearch.models.catalog import get_seed

    return get_seed(ref).spec
