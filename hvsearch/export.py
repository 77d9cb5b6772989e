"""``hvsearch export ARCH --format onnx|torchscript|safetensors``: a model that can leave the tool.

``ARCH`` is anything :mod:`hvsearch.arch_ref` resolves (a seed, an architecture file, a scaled
family member's file, ``STUDY:best`` / ``STUDY:<n>``). A study trial is exported with its trained
weights when the study kept its checkpoint (``studies/<study>/checkpoints/<arch id>/``), and
freshly initialised otherwise; the summary says which.

Written to ``--out`` (default ``exports/``), named after the architecture:

* the model file: ``<name>.onnx`` (dynamic batch, and dynamic spatial size where the model allows
  it, unless ``--batch N`` fixes the batch or ``--fixed-size`` the size; opset 18; one file, weights inside; ``--exporter auto`` tries torch.onnx's TorchScript-based
  exporter, then the dynamo one), ``<name>.pt`` (``torch.jit.script``) or ``<name>.safetensors`` (the
  state dict, loadable by ``timm.create_model("hvs_arch", arch="<name>.yaml", pretrained=True,
  pretrained_cfg_overlay=dict(file="<name>.safetensors"))``);
* ``<name>.yaml``: the architecture;
* ``<name>.json``: params, FLOPs, input size, normalisation, weights, and the check below.

Every export is checked by loading it back — ONNX in ONNX Runtime, TorchScript with
``torch.jit.load``, safetensors through timm — and comparing with the PyTorch model on a batch of
another size than the export's example (which proves the dynamic batch): the largest absolute
difference must stay within 1e-4 in float32, or the export is an error.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hvsearch.arch import TOTAL_STRIDE
from hvsearch.errors import ExportError, MissingDependencyError

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
TOLERANCE = 1e-4
OPSET = 18


@dataclass
class Exported:
    path: Path
    meta: dict  # what <name>.json holds
    model: Any  # the PyTorch model that was exported (eval mode)


def export(ref: str, fmt: str, out: str | Path = "exports", resolution: int | None = None,
           storage: str | None = None, studies_dir: str = "studies",
           say: Callable[[str], None] = print, exporter: str = "auto", batch: int | None = None,
           fixed_size: bool = False) -> Exported:
    """Export ``ref`` (see the module docstring). ``batch`` fixes an ONNX file's batch at that size
    and ``fixed_size`` its spatial size at the export's resolution (both open by default, where the
    model allows it): a fixed-shape file can be faster (TransXNet's IDConv at large batches) and is
    what some runtimes ask for."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"--exporter must be one of {', '.join(ONNX_EXPORTERS)}, got {exporter!r}")
    if exporter != "auto" and fmt != "onnx":
        raise ExportError(f"--exporter {exporter} chooses an ONNX exporter; it does not apply to --format {fmt}")
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise ExportError(f"--batch must be an integer from 1 to {MAX_BATCH}, got {batch}")
    for option, given in (("--batch", batch is not None), ("--fixed-size", fixed_size)):
        if given and fmt != "onnx":
            raise ExportError(f"{option} fixes a shape of an ONNX file; it does not apply to --format {fmt} "
                              "(TorchScript and safetensors keep every shape open)")
    import torch

    from hvsearch.arch_ref import resolve
    from hvsearch.cost import count_spec
    from hvsearch.models import HybridBackbone
    from hvsearch.models.catalog import pretrained_cfg

    spec = resolve(ref, storage=storage, studies_dir=studies_dir)
    state, weights = _trained_state(ref, spec, studies_dir)
    if state is not None:
        from hvsearch.arch import ModelSpec

        spec = ModelSpec.from_dict(state["arch"]).replace(name=spec.name)
    res = resolution or spec.resolution
    if res % 32:
        raise ExportError(f"--resolution must be a multiple of 32 (the total stride), got {res}")
    model = HybridBackbone(spec).eval()
    if state is not None:
        model.load_state_dict(state["model"])
    name = spec.file_stem
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX[fmt]}"
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch or 2, spec.in_chans, res, res, generator=gen)
    check = torch.randn(3, spec.in_chans, res, res, generator=gen)  # another batch size than the example
    with torch.no_grad():
        expected = model(check)
    say(f"exporting {spec.name or spec.arch_id} ({weights}) as {fmt} at {res} px ...")
    yaml_path = folder / f"{name}.yaml"
    spec.save(yaml_path)
    dynamic = ["batch"]
    if fmt == "onnx":
        closed = {*(("batch",) if batch is not None else ()), *(("height", "width") if fixed_size else ())}
        exporter, got, probe, expected, dynamic = _onnx(model, example, check, path, exporter, closed)
        if "batch" not in dynamic:
            declaring = _declaring(spec, "batch")
            why = ("--batch" if batch is not None else f"its {declaring} part declares the batch fixed" if declaring
                   else "no exporter could make it dynamic")
            say(f"  {path.name}: the batch is fixed at {example.shape[0]} ({why})")
        if "height" not in dynamic:
            declaring = _declaring(spec, "height")
            why = ("--fixed-size" if fixed_size else f"its {declaring} part is built for one feature size"
                   if declaring else "no exporter could leave it open")
            say(f"  {path.name}: the input size is fixed at {res} px ({why})")
    elif fmt == "torchscript":
        exporter, got = _torchscript(model, check, path)
    else:
        exporter, got = _safetensors(model, spec, check, path, yaml_path)
    diff = float((got - expected).abs().max())
    if not diff <= TOLERANCE:
        raise ExportError(f"{path}: the exported model differs from PyTorch by {diff:.3g} (max abs, batch of 3), "
                          f"above the tolerance {TOLERANCE:g}")
    cost = count_spec(spec, resolution=res)
    cfg = pretrained_cfg(spec)
    meta = {"arch": spec.name, "arch_id": spec.arch_id, "format": fmt, "file": path.name, "exporter": exporter,
            "weights": weights, "params": cost.params, "flops": cost.flops, "input_size": [spec.in_chans, res, res],
            "dynamic": dynamic, "batch": None if "batch" in dynamic else example.shape[0], "mean": list(cfg["mean"]), "std": list(cfg["std"]), "num_classes": spec.num_classes,
            "max_abs_diff": diff, "tolerance": TOLERANCE}
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    say(f"wrote {path} ({exporter}), {yaml_path.name}, {name}.json; checked against PyTorch: max abs "
        f"difference {diff:.2e} (tolerance {TOLERANCE:g}), {cost.params / 1e6:.2f} M params, "
        f"{cost.flops / 1e9:.3f} GFLOPs at {res} px")
    return Exported(path, meta, model)


def _trained_state(ref: str, spec, studies_dir: str):
    """(checkpoint state, words for the summary): a study trial's kept checkpoint, else none."""
    from hvsearch.arch_ref import is_study_ref

    if not is_study_ref(ref):
        return None, "freshly initialised: no trained weights"
    import torch

    from hvsearch.search.study import inside
    from hvsearch.train.proxy import CHECKPOINT_NAME

    study = ref.rpartition(":")[0]
    # a trial's checkpoint sits under its arch id (hvsearch.search.trainable)
    path = inside(studies_dir, study) / "checkpoints" / spec.arch_id / CHECKPOINT_NAME
    if not path.is_file():
        return None, f"freshly initialised: study {study!r} kept no checkpoint of this trial"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, f"trained weights from {path} (epoch {state.get('epoch')})"


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"exporting to ONNX needs {package}: pip install {package}") from None


# What an ONNX file may leave open, most first: the batch and the spatial size, the batch, the
# spatial size, nothing.
ONNX_DYNAMIC = (("batch", "height", "width"), ("batch",), ("height", "width"), ())
MAX_BATCH = 4096  # the largest batch a dynamic-batch file is exported for (torch.export's Dim), and --batch's
# --exporter: which of torch.onnx's exporters to try (dynamo=...), in order. The TorchScript-based
# one goes first in "auto": on the seeds it succeeds on it is 4-30x faster (CMT at 64 px with a
# dynamic size: 2.7 s against 80 s, the dynamo exporter's symbolic shapes being the cost) and its
# files ran as fast or faster in ONNX Runtime (README, Export); Hire-MLP's and TransXNet's models
# need the dynamo one, which then follows. A future torch without the TorchScript-based exporter
# fails that attempt and the dynamo one follows just the same.
ONNX_EXPORTERS = {"auto": (False, True), "dynamo": (True,), "torchscript": (False,)}


def _onnx(model, example, check, path: Path, exporter: str = "auto", closed: set[str] = frozenset()):
    """(exporter, ORT output, the input it ran on, PyTorch's output on it, dynamic axes).

    Tried in the order of :data:`ONNX_DYNAMIC`, each with the exporters ``exporter`` names
    (:data:`ONNX_EXPORTERS`: ``auto`` is the TorchScript-based one, then dynamo). An attempt
    counts only if ONNX Runtime reproduces PyTorch within the tolerance on an input the export did
    not see: a batch of another size and, for a dynamic spatial size, 32 px more on each side (an
    exporter that bakes a shape-dependent constant into the graph runs there and gives wrong
    numbers, which this catches). Spatial sizes stay dynamic only where the model allows it.
    Axes in ``closed`` (the caller's) and axes a part declares fixed (``fixed_export_axes``:
    Hire-MLP's regions fix the size) are not tried, and neither is an axis through dynamo whose size in ``example`` is 1 (a batch of 1, a
    last feature map of 1 px). Modules with another formulation for what an attempt leaves open
    switch to it for the attempt (``export_impls``: TransXNet's IDConv, see ``apply_impl``)."""
    import torch

    _require("onnx", "onnx")
    ort = _require("onnxruntime", "onnxruntime")
    errors: dict[str, str] = {}  # the last error of each exporter
    fixed = _fixed_axes(getattr(model, "spec", None)) | set(closed)
    ones = _size_one_axes(example)
    for dynamic in [d for d in ONNX_DYNAMIC if not fixed & set(d)] or [()]:
        probe = _probe(example, check, dynamic)
        try:
            with torch.no_grad():
                expected = model(probe)
        except Exception as e:  # noqa: BLE001  (the model itself refuses that size: not dynamic)
            errors["PyTorch"] = f"{tuple(probe.shape[2:])} px does not run in PyTorch ({_first_op(e)})"
            continue
        for dynamo in ONNX_EXPORTERS[exporter]:
            name = "torch.onnx dynamo" if dynamo else "torch.onnx (TorchScript-based)"
            label = "dynamo exporter" if dynamo else "TorchScript-based exporter"
            if dynamo and ones.keys() & set(dynamic):
                # torch.export specialises a dimension of size 1: the attempt would fail after
                # tracing the whole model (TransXNet at 32 px: 22 s)
                errors[label] = f"torch.export fixes a size of 1 ({'; '.join(sorted(set(ones.values())))})"
                continue
            try:
                with _quiet(), _export_impls(model, dynamic):
                    _onnx_export(model, example, path, dynamic, dynamo)
                    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: probe.numpy()})[0])
            except MissingDependencyError:
                raise
            except Exception as e:  # noqa: BLE001  (the exporters' errors are many types; named below)
                errors[label] = _first_op(e)
                continue
            diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
            if diff <= TOLERANCE:
                return name, got, probe, expected, list(dynamic)
            errors[label] = (f"with {'dynamic ' + ', '.join(dynamic) if dynamic else 'fixed shapes'} it differs "
                             f"from PyTorch by {diff:.3g}")
    why = "; ".join(f"{k}: {v}" for k, v in errors.items())
    other = "" if exporter == "auto" else " (--exporter auto tries both)"
    raise ExportError(f"{path.stem}: ONNX export failed at fixed shapes too ({why}){other}; --format torchscript "
                      "or safetensors works for this architecture")


def _size_one_axes(example) -> dict[str, str]:
    """The axes of ``example`` whose size, or whose last feature map's size, is 1: axis -> why."""
    b, _, h, w = example.shape
    ones = {"batch": f"a batch of {b}"} if b == 1 else {}
    if min(h, w) < 2 * TOTAL_STRIDE:
        ones |= dict.fromkeys(("height", "width"), f"a last feature map of 1 px at {min(h, w)} px")
    return ones


@contextlib.contextmanager
def _export_impls(model, dynamic: tuple[str, ...]):
    """Modules with another formulation for an export that leaves ``dynamic`` open (their
    ``export_impls(dynamic)``: attribute -> value, e.g. TransXNet's IDConv applying per-sample
    kernels without folding the batch into conv groups) switched to it for the attempt, and back."""
    saved = []
    try:
        for m in model.modules():
            choose = getattr(m, "export_impls", None)
            if callable(choose):
                for attr, value in choose(frozenset(dynamic)).items():
                    saved.append((m, attr, getattr(m, attr)))
                    setattr(m, attr, value)
        yield
    finally:
        for m, attr, value in reversed(saved):
            setattr(m, attr, value)


def _external_data(path: Path) -> Path:
    """Where the dynamo exporter would put the weights if asked to keep them out of the file."""
    return path.with_name(path.name + ".data")


def _fixed_axes(spec) -> set[str]:
    """The axes some part of ``spec`` says an export cannot leave open (``fixed_export_axes``)."""
    if spec is None:
        return set()
    return set().union(*(p.fixed_export_axes() for p in _parts(spec)))


def _declaring(spec, axis: str) -> str:
    """The types of the parts of ``spec`` that declare ``axis`` fixed, comma-separated ('' if none)."""
    return ", ".join(sorted({getattr(p, "type", type(p).__name__) for p in _parts(spec)
                             if axis in p.fixed_export_axes()}))


def _parts(spec) -> list:
    return [spec.stem, spec.head] + [p for st in spec.stages for p in (st.downsample, st.mixer, st.ffn)]


def _probe(example, check, dynamic: tuple[str, ...]):
    """The input an attempt is checked on: ``check`` (another batch than the example), 32 px larger
    when the spatial size is dynamic, the example's own batch when the batch is fixed."""
    import torch

    b = check.shape[0] if "batch" in dynamic else example.shape[0]
    if "height" in dynamic:
        _, c, h, w = check.shape
        return torch.randn(b, c, h + 32, w + 32, generator=torch.Generator().manual_seed(1))
    return check.repeat(-(-b // check.shape[0]), 1, 1, 1)[:b]


def _onnx_export(model, example, path: Path, dynamic: tuple[str, ...], dynamo: bool) -> None:
    import torch

    if dynamo:
        _require("onnxscript", "onnxscript")
        axes = {}
        if "batch" in dynamic:
            axes[0] = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        if "height" in dynamic:  # multiples of the total stride
            axes[2] = 32 * torch.export.Dim("height_32", min=1, max=128)
            axes[3] = 32 * torch.export.Dim("width_32", min=1, max=128)
        # One self-contained file: the weights inside it (external_data=False), not in a
        # <name>.onnx.data beside it that a copied .onnx would leave behind (protobuf's 2 GB cap is
        # far above any seed: the largest, hire_mlp_large, is 0.4 GB).
        data = _external_data(path)
        data.unlink(missing_ok=True)
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=OPSET,
                              dynamic_shapes=({**axes},) if axes else None, input_names=["input"],
                              output_names=["logits"], verbose=False, external_data=False)
        finally:
            data.unlink(missing_ok=True)  # written by a failed attempt
    else:
        where = {"batch": 0, "height": 2, "width": 3}
        axes = {"input": {where[n]: n for n in dynamic}, "logits": {0: "batch"} if "batch" in dynamic else {}}
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes if dynamic else None)


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines, warnings and logged tracebacks of a failed attempt (the
    fallback follows, and a final failure is reported in one line) stay off the console."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]  # the C++ side (a failed export's graph dump) writes to the fds
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_op(error: Exception) -> str:
    """The op an exporter stopped at, from its message, or its first line."""
    text = str(error)
    for pattern in (r"ONNX export of ([\w:.]+)", r"(aten::[\w.]+)", r"(torch\.ops\.[\w.]+)", r"operator (\w+::[\w.]+)"):
        m = re.search(pattern, text)
        if m:
            return f"unsupported op {m.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[")]
    return (lines[0] if lines else type(error).__name__)[:160]


def _torchscript(model, check, path: Path):
    import torch

    try:
        scripted = torch.jit.script(model)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{path.stem}: TorchScript export failed ({_first_op(e)}); --format safetensors works "
                          "for every architecture") from None
    scripted.save(str(path))
    with torch.no_grad():
        return "torch.jit.script", torch.jit.load(str(path)).eval()(check)


def _safetensors(model, spec, check, path: Path, yaml_path: Path):
    import timm
    import torch
    from safetensors.torch import save_file

    # stage-shared tables (position biases) appear under two names in the state dict: each gets
    # its own copy, so that loading by name restores both
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path),
              metadata={"arch_id": spec.arch_id, "format": "pt"})
    loaded = timm.create_model("hvs_arch", arch=str(yaml_path), pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        return "safetensors (timm-loadable)", loaded(check)
