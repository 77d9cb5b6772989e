"""The seed catalog's names by family, importable without torch.

Commands that take a seed name (``show``, ``train``, ``scale``) check it here before loading the
models, so a misspelled name is answered at once with a "did you mean", not after torch, timm and
the catalog have loaded. :func:`hvsearch.models.catalog.register_seed` refuses a seed not listed
here, and the test-suite checks that the two agree, so this list cannot drift from the catalog.
"""
from __future__ import annotations

from pathlib import Path

#: family -> its seeds, smallest first (the catalog's order)
SEEDS: dict[str, tuple[str, ...]] = {
    "CMT": ("cmt_ti", "cmt_xs", "cmt_s", "cmt_b"),
    "Container": ("container_light", "container"),
    "ConvMLP": ("convmlp_s", "convmlp_m", "convmlp_l"),
    "Hire-MLP": ("hire_mlp_tiny", "hire_mlp_small", "hire_mlp_base", "hire_mlp_large"),
    "TransXNet": ("transxnet_t", "transxnet_s", "transxnet_b"),
}
ARCH_SUFFIXES = (".yaml", ".yml", ".json")


def seed_names() -> list[str]:
    return [name for names in SEEDS.values() for name in names]


def check_arch_ref(ref: str) -> None:
    """Raise :class:`~hvsearch.errors.SpecError` (one line) unless ``ref`` is a seed name or an
    existing architecture file; cheap, no torch."""
    from hvsearch.errors import SpecError, did_you_mean

    path = Path(ref)
    if path.suffix in ARCH_SUFFIXES or path.exists():
        if not path.is_file():
            what = ("is a directory, not a file" if path.is_dir() else "is not a regular file" if path.exists()
                    else "does not exist")
            raise SpecError("", f"architecture file {path} {what}", None, show_value=False)
        return
    if ref not in seed_names():
        raise SpecError("", f"{ref!r} is neither a seed nor an architecture file{did_you_mean(ref, seed_names())}; "
                        f"seeds: {', '.join(seed_names())}", None, show_value=False)
