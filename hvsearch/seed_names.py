"""The seed catalog's names by family, importable without torch (each family's ``SEEDS``).

Commands that take a seed name (``show``, ``train``, ``scale``) check it here before loading the
models, so a misspelled name is answered at once with a "did you mean", not after torch, timm and
the catalog have loaded. :func:`hvsearch.models.catalog.register_seed` refuses a seed not listed
here, and the test-suite checks that the two agree, so this list cannot drift from the catalog.
"""
from __future__ import annotations

from pathlib import Path


def _seeds() -> dict[str, tuple[str, ...]]:
    from hvsearch.families import family, family_names

    return {name: tuple(family(name).SEEDS) for name in family_names()}


#: family -> its seeds, smallest first (the catalog's order), from each family's ``SEEDS``
SEEDS: dict[str, tuple[str, ...]] = _seeds()
ARCH_SUFFIXES = (".yaml", ".yml", ".json")


def seed_names() -> list[str]:
    return [name for names in SEEDS.values() for name in names]


def check_arch_ref(ref: str) -> None:
    """Raise :class:`~hvsearch.errors.SpecError` (one line) unless ``ref`` is a seed name or an
    existing architecture file; cheap, no torch."""
    from hvsearch.errors import SpecError, did_you_mean

    path = Path(ref)
    try:
        if path.suffix in ARCH_SUFFIXES or path.exists():
            if not path.is_file():
                what = ("is a directory, not a file" if path.is_dir() else "is not a regular file" if path.exists()
                        else "does not exist")
                raise SpecError("", f"architecture file {path} {what}", None, show_value=False)
            return
    except OSError as e:  # a name the system refuses (too long, ...)
        raise SpecError("", f"architecture file {path} cannot be read: {e.strerror or e}", None,
                        show_value=False) from None
    if ref not in seed_names():
        raise SpecError("", f"{ref!r} is neither a seed nor an architecture file{did_you_mean(ref, seed_names())}; "
                        f"seeds: {', '.join(seed_names())}", None, show_value=False)
