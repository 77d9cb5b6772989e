"""``hvsearch export``: every format written, loaded back by its own runtime (ONNX Runtime,
torch.jit.load, timm) and checked against PyTorch; a study trial exported with the weights its
checkpoint kept; bad input in one line."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import timm
import torch

from hvsearch.arch import ModelSpec
from hvsearch.export import export
from hvsearch.families import family
from hvsearch.models import HybridBackbone, get_seed, seed_names
from hvsearch.search import study as st
from hvsearch.train.proxy import CHECKPOINT_NAME
from tests.train.builders import tiny_spec

SMALLEST = [family(f).SEEDS[0] for f in sorted({get_seed(s).family for s in seed_names()})]


@pytest.fixture
def arch_file(tmp_path):
    return tiny_spec(name="tiny_export").save(tmp_path / "tiny_export.yaml")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_every_format_round_trips(arch_file, tmp_path, fmt):
    out = tmp_path / "out"
    done = export(str(arch_file), fmt, out=out, say=lambda line: None)
    meta = json.loads((out / "tiny_export.json").read_text())
    assert done.path.exists() and (out / "tiny_export.yaml").exists()
    assert meta["format"] == fmt and meta["input_size"] == [3, 32, 32] and meta["params"] > 0
    assert meta["max_abs_diff"] <= (0.0 if fmt == "safetensors" else 1e-4)  # reloaded weights: identical
    assert meta["weights"].startswith("freshly initialised")
    x = torch.randn(5, 3, 32, 32)  # yet another batch size
    if fmt == "onnx":
        session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == (5, 10) and np.isfinite(got).all()
    elif fmt == "torchscript":
        assert torch.jit.load(str(done.path))(x).shape == (5, 10)
    else:
        model = timm.create_model("hvs_arch", arch=str(out / "tiny_export.yaml"), pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(done.path))).eval()
        assert model(x).shape == (5, 10)


def _one_block_per_stage(seed: str, folder) -> str:
    """``seed``'s architecture with each stage cut to one block: every layer the seed has, in the
    graph once (the export's time is the graph's size: transxnet_t's 18 blocks take ~60 s through
    dynamo, one per stage ~12 s). Every whole seed is exported by benchmarks/export_check.py."""
    spec = get_seed(seed).spec
    spec = spec.replace(stages=tuple(dataclasses.replace(s, depth=1) for s in spec.stages), name=f"{seed}_1")
    folder.mkdir()
    return str(spec.validate().save(folder / f"{seed}_1.yaml"))


@pytest.mark.parametrize("seed", SMALLEST)
def test_one_seed_per_family_a_block_per_stage_round_trips_through_onnx_runtime(seed, tmp_path):
    lines: list[str] = []
    arch = _one_block_per_stage(seed, tmp_path / "arch")
    out = tmp_path / "out"
    done = export(arch, "onnx", out=out, resolution=32, say=lines.append)
    assert done.meta["max_abs_diff"] <= 1e-4 and done.meta["input_size"] == [3, 32, 32]
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    # Every checked attempt is kept, most dynamic first: CMT, Container and ConvMLP run at any size a
    # multiple of 32; Hire-MLP's regions fix the size; TransXNet's size cannot be open at 32 px
    # (its last map is 1 px, which torch.export fixes, and the TorchScript-based exporter cannot
    # pool 8 px to IDConv's 7); its batch is open through IDConv's block-diagonal form.
    family_ = get_seed(seed).family
    expected = ["batch"] if family_ in ("hire", "transxnet") else ["batch", "height", "width"]
    assert done.meta["dynamic"] == expected
    # auto tries the TorchScript-based exporter first; Hire-MLP's and TransXNet's need dynamo
    assert done.meta["exporter"] == ("torch.onnx dynamo" if family_ in ("hire", "transxnet")
                                     else "torch.onnx (TorchScript-based)")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{done.path.stem}{s}" for s in (".onnx", ".yaml", ".json"))
    assert not [line for line in lines if "the batch is fixed" in line]
    sizes = [(32, 32)] + ([(64, 96)] if "height" in expected else [])
    for h, w in sizes:  # the export's example had batch 2, its check 3
        x = torch.randn(1, 3, h, w)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, done.model(x), rtol=0, atol=1e-4)


@pytest.fixture
def one_attention_file(tmp_path):
    """The tiny hybrid with CMT attention (spatial reduction 2, relative-position bias) in its
    second stage only and ConvMLP's conv blocks in the others: dynamo with symbolic sizes spends
    ~8 s on each attention block (the whole tiny hybrid: ~40 s)."""
    d = tiny_spec(name="tiny_export").to_dict()
    for i in (0, 2, 3):
        d["stages"][i].update(mixer={"type": "conv_bottleneck"}, ffn={"type": "none"})
    return ModelSpec.from_dict(d).save(tmp_path / "tiny_export.yaml")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_either_exporter_writes_one_self_contained_file_of_any_size(one_attention_file, tmp_path, exporter):
    """CMT attention through both exporters, batch and size left open (64 px: at the 32-px minimum
    the last map is 1x1, and torch.export specialises a size of 1). The dynamo exporter's weights
    go inside the .onnx (external_data=False), so the file alone is the model."""
    lines: list[str] = []
    done = export(str(one_attention_file), "onnx", out=tmp_path, resolution=64, exporter=exporter, say=lines.append)
    assert done.meta["exporter"] == {"dynamo": "torch.onnx dynamo", "torchscript": "torch.onnx (TorchScript-based)"}[exporter]
    assert done.meta["dynamic"] == ["batch", "height", "width"] and not any("fixed" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_export.json", "tiny_export.onnx", "tiny_export.yaml"]
    moved = tmp_path / "elsewhere" / "model.onnx"
    moved.parent.mkdir()
    done.path.rename(moved)
    session = ort.InferenceSession(str(moved), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 96, 128)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, done.model(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("batch, fixed_size, dynamic", [(4, False, ["height", "width"]), (None, True, ["batch"]),
                                                     (5, True, [])])
def test_batch_and_size_fixed_on_request(one_attention_file, tmp_path, batch, fixed_size, dynamic):
    """--batch N and --fixed-size close what would be open (CMT attention's batch and size at 64 px):
    the file runs at that batch / size, says so in its .json and the summary, and refuses others."""
    lines: list[str] = []
    done = export(str(one_attention_file), "onnx", out=tmp_path, resolution=64, exporter="torchscript",
                  batch=batch, fixed_size=fixed_size, say=lines.append)
    assert done.meta["dynamic"] == dynamic and done.meta["batch"] == batch
    assert done.meta["max_abs_diff"] <= 1e-4
    assert any(f"the batch is fixed at {batch} (--batch)" in line for line in lines) == (batch is not None)
    assert any("the input size is fixed at 64 px (--fixed-size)" in line for line in lines) == fixed_size
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    b = batch or 3
    h = 64 if fixed_size else 96
    x = torch.randn(b, 3, h, h)
    got = torch.from_numpy(session.run(None, {feed: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, done.model(x), rtol=0, atol=1e-4)
    for shape in ([b + 1, 3, h, h] if batch else None, [b, 3, h + 32, h + 32] if fixed_size else None):
        if shape is not None:
            with pytest.raises(Exception, match="(?i)dimension|shape"):
                session.run(None, {feed: torch.randn(*shape).numpy()})


def test_transxnet_at_a_fixed_batch_keeps_idconv_grouped(tmp_path):
    """--batch fixes TransXNet's batch: IDConv's per-sample kernels stay one conv of B*C groups
    (the faster form at large batches, export_check.py --compare-idconv), not the block-diagonal
    one an open batch needs; either way the numbers are PyTorch's."""
    arch = _one_block_per_stage("transxnet_t", tmp_path / "arch")
    done = export(arch, "onnx", out=tmp_path / "out", resolution=32, batch=4, say=lambda line: None)
    assert done.meta["dynamic"] == [] and done.meta["batch"] == 4 and done.meta["max_abs_diff"] <= 1e-4
    import onnx

    groups = {a.i for node in onnx.load(str(done.path)).graph.node if node.op_type == "Conv"
              for a in node.attribute if a.name == "group"}
    idconv = [m for m in done.model.modules() if hasattr(m, "apply_impl")]
    assert idconv and all(m.apply_impl == "grouped" for m in idconv)  # switched back after the export
    assert {4 * m.dim for m in idconv} <= groups  # B*C groups: the batch folded into the conv


def test_a_study_trial_is_exported_with_its_checkpoint(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    spec = tiny_spec(name="trained")
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{studies / 's.db'}")
    trial = study.ask()
    trial.set_user_attr(st.ATTR_ARCH, json.dumps(spec.to_dict()))
    trial.set_user_attr(st.ATTR_ARCH_ID, spec.arch_id)
    study.tell(trial, 80.0)
    model = HybridBackbone(spec)
    with torch.no_grad():
        model.head.fc.weight.fill_(0.25)  # what no initialisation gives
    folder = studies / "s" / "checkpoints" / spec.arch_id
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "arch": spec.to_dict(), "arch_id": spec.arch_id, "epoch": 3},
               folder / CHECKPOINT_NAME)

    done = export("s:0", "safetensors", out=tmp_path / "out", studies_dir=str(studies), say=lambda line: None)
    assert done.meta["weights"].startswith("trained weights from") and "epoch 3" in done.meta["weights"]
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(done.path))["head.fc.weight"], torch.full_like(model.head.fc.weight, 0.25))

    (studies / "s" / "checkpoints").rename(studies / "s" / "elsewhere")
    again = export("s:best", "torchscript", out=tmp_path / "out2", studies_dir=str(studies), say=lambda line: None)
    assert again.meta["weights"] == "freshly initialised: study 's' kept no checkpoint of this trial"


def test_bad_input_is_one_line(arch_file, tmp_path):
    for args, words in ((["nosuch", "--format", "onnx"], "neither a seed nor an architecture file"),
                        ([str(arch_file), "--format", "onnx", "--resolution", "50"], "multiple of 32"),
                        ([str(arch_file), "--format", "tflite"], "invalid choice"),
                        ([str(arch_file), "--format", "torchscript", "--exporter", "dynamo"],
                         "--exporter dynamo chooses an ONNX exporter; it does not apply to --format torchscript"),
                        ([str(arch_file), "--format", "onnx", "--batch", "0"],
                         "argument --batch: must be an integer in [1, 4096], got 0"),
                        ([str(arch_file), "--format", "safetensors", "--fixed-size"],
                         "--fixed-size fixes a shape of an ONNX file; it does not apply to --format safetensors")):
        proc = subprocess.run([sys.executable, "-m", "hvsearch.cli", "export", *args, "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
