"""IDX data sets (Fashion-MNIST, MNIST, KMNIST): both file forms, torchvision's layout, the lookup
order, one error per broken file, 1-channel training end to end; and one slow run on the real
Fashion-MNIST files."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from hvsearch.errors import DataError
from hvsearch.train import DataConfig, TrainConfig, idx, load_data, pixel_linear_probe, train_proxy
from hvsearch.train.augment import EvalTransform, TrainTransform
from hvsearch.train.config import IDX_DATASETS
from hvsearch.train.proxy import CHECKPOINT_NAME
from hvsearch.train.sources import check_data, data_shape
from tests.train.builders import idx_bytes, tiny_spec, write_idx

REAL = Path("/usr/share/datasets/fashion-mnist")


def test_the_idx_table_matches_the_config():
    assert tuple(idx.IDX) == IDX_DATASETS
    assert idx.IDX["fashion_mnist"].classes[0] == "T-shirt/top" and idx.IDX["fashion_mnist"].classes[9] == "Ankle boot"
    assert idx.IDX["mnist"].classes == tuple("0123456789")
    assert idx.IDX["kmnist"].classes == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert [idx.IDX[n].hflip for n in IDX_DATASETS] == [0.5, 0.0, 0.0]


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gz_and_raw_files_padded_to_one_channel_32px(tmp_path, gz):
    arrays = write_idx(tmp_path, n_train=30, n_test=10, gz=gz)
    splits = load_data(DataConfig(name="fashion_mnist", root=str(tmp_path), val_split=0.0), resolution=32)
    assert (len(splits.train), len(splits.val)) == (30, 10)  # val_split 0: the official test split
    assert splits.in_chans == 1 and splits.num_classes == 10 and splits.classes[0] == "T-shirt/top"
    assert splits.mean == (0.2190,) and splits.std == (0.3318,)
    assert splits.crop_scale is None and splits.hflip == 0.5 and splits.image_size == 32
    images = splits.train.images
    assert images.shape == (30, 1, 32, 32) and images.dtype == torch.uint8
    inner = images[:, 0, 2:30, 2:30].numpy()
    np.testing.assert_array_equal(inner, arrays["train-images-idx3-ubyte"])
    border = images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.abs().sum()) == 0  # 2 px of zeros on every side; the pixels inside are 1..255
    np.testing.assert_array_equal(splits.train.labels.numpy(), np.arange(30) % 10)
    test_image, test_label = splits.val[3]
    np.testing.assert_array_equal(test_image[0, 2:30, 2:30].numpy(), arrays["t10k-images-idx3-ubyte"][3])
    assert test_label == 3


def test_validation_is_held_out_of_train_when_val_split_is_set(tmp_path):
    write_idx(tmp_path, n_train=40, n_test=10)
    splits = load_data(DataConfig(name="mnist", root=str(tmp_path), val_split=0.25), resolution=32, fraction=0.5)
    assert len(splits.val) == 10 and len(splits.train) == 20  # 1 of 4 per class held out; ceil(0.5 · 3)
    assert set(splits.val.indices.tolist()).isdisjoint(splits.train.indices.tolist())
    assert splits.hflip == 0.0 and splits.classes == tuple("0123456789")


def test_a_process_reads_the_files_once_and_again_when_they_are_replaced(tmp_path, monkeypatch):
    # a Ray worker re-used from trial to trial loads the same set at every trial
    reads = []
    real = idx.read_split
    monkeypatch.setattr(idx, "read_split", lambda *files: reads.append(files) or real(*files))
    write_idx(tmp_path, n_train=20, n_test=10)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), val_split=0.0)
    first, again = load_data(cfg, 32), load_data(cfg, 32, fraction=0.5)
    assert len(reads) == 2  # the training and the test split, once
    assert again.train.images.data_ptr() == first.train.images.data_ptr()  # the same arrays
    assert (len(first.train), len(again.train)) == (20, 10)  # the subset is still drawn per call
    # new files put in place (a new download): read again, the new pixels
    new = write_idx(tmp_path / "new", n_train=20, n_test=10, seed=1)
    for f in (tmp_path / "new").iterdir():
        f.replace(tmp_path / f.name)
    replaced = load_data(cfg, 32)
    assert len(reads) == 4
    np.testing.assert_array_equal(replaced.train.images[:, 0, 2:30, 2:30].numpy(), new["train-images-idx3-ubyte"])


def test_torchvision_layout_is_read(tmp_path):
    write_idx(tmp_path / "KMNIST" / "raw", n_train=20, n_test=10, gz=False)
    cfg = DataConfig(name="kmnist", root=str(tmp_path), val_split=0.0)
    check_data(cfg)
    splits = load_data(cfg, 32)
    assert len(splits.train) == 20 and splits.classes[3] == "tsu"


# ---- lookup ---------------------------------------------------------------------------------

def test_lookup_order_env_then_system_folder_either_spelling(tmp_path, monkeypatch, no_installed_data):
    system = tmp_path / "system"
    write_idx(system / "fashion-mnist", n_train=20)  # Debian's spelling
    cfg = DataConfig(name="fashion_mnist", val_split=0.0)
    assert len(load_data(cfg, 32).train) == 20
    monkeypatch.setenv(idx.DATA_ENV, str(tmp_path / "mine"))
    assert len(load_data(cfg, 32).train) == 20  # $HVSEARCH_DATA has no copy: the system one
    write_idx(tmp_path / "mine" / "fashion_mnist", n_train=30)
    assert len(load_data(cfg, 32).train) == 30  # $HVSEARCH_DATA comes first
    assert idx.find_files("fashion_mnist")[("train", "images")].parent == tmp_path / "mine" / "fashion_mnist"
    # a root, when given, is the only place looked at
    with pytest.raises(DataError, match="^fashion_mnist not found: looked in "):
        load_data(cfg.replace(root=str(tmp_path / "elsewhere")), 32)


def test_missing_data_names_every_path_and_how_to_get_it(tmp_path, monkeypatch, no_installed_data):
    monkeypatch.setenv(idx.DATA_ENV, str(tmp_path / "mine"))
    (tmp_path / "system" / "fashion_mnist").mkdir(parents=True)
    (tmp_path / "system" / "fashion_mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        check_data(DataConfig(name="fashion_mnist"))
    msg = str(err.value)
    assert "\n" not in msg
    looked = [tmp_path / base / name / sub for base in ("mine", "system") for name in ("fashion_mnist", "fashion-mnist")
              for sub in ("", "FashionMNIST/raw")]
    assert msg.startswith(f"fashion_mnist not found: looked in {', '.join(map(str, looked))} for "
                          "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                          "t10k-labels-idx1-ubyte[.gz]")
    assert (f"({tmp_path / 'system' / 'fashion_mnist'} lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte)") in msg
    assert msg.endswith("to get it: apt-get install dataset-fashion-mnist (Debian), or download the four IDX files "
                        "into $HVSEARCH_DATA/fashion_mnist (or set data.root to their folder)")
    with pytest.raises(DataError, match=r"^mnist not found: .*/system/mnist/MNIST/raw for .*into \$HVSEARCH_DATA/mnist"):
        load_data(DataConfig(name="mnist"), 32)


# ---- broken files ---------------------------------------------------------------------------

def _corrupt(folder: Path, stem: str, data: bytes) -> Path:
    (folder / f"{stem}.gz").unlink()
    (folder / stem).write_bytes(data)
    return folder / stem


@pytest.mark.parametrize("case", ["magic", "short header", "dims", "truncated", "trailing", "count", "range",
                                  "gzip"])
def test_each_broken_file_is_one_error_naming_it(tmp_path, case):
    arrays = write_idx(tmp_path, n_train=20, n_test=10)
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    image_file, label_file = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    if case == "magic":
        bad = _corrupt(tmp_path, image_file, idx_bytes(images, magic=0x00000903))
        expected = "corrupt IDX header: magic number 0x00000903, expected 0x00000803"
    elif case == "short header":
        bad = _corrupt(tmp_path, label_file, b"\x00\x00\x08")
        expected = "corrupt IDX header: the file has 3 bytes, fewer than the 8-byte header"
    elif case == "dims":
        bad = _corrupt(tmp_path, image_file, idx_bytes(np.zeros((20, 32, 32))))
        expected = "images must be N×28×28, the header says 20×32×32"
    elif case == "truncated":
        bad = _corrupt(tmp_path, image_file, idx_bytes(images)[:-100])
        expected = "truncated file: the header's 20×28×28 needs 15680 data bytes, the file has 15580"
    elif case == "trailing":
        bad = _corrupt(tmp_path, label_file, idx_bytes(labels) + b"\x00")
        expected = "trailing bytes: the header's 20 needs 20 data bytes, the file has 21"
    elif case == "count":
        bad = _corrupt(tmp_path, label_file, idx_bytes(labels[:19]))
        expected = f"19 labels for the 20 images of {tmp_path / image_file}.gz"
    elif case == "range":
        bad = _corrupt(tmp_path, label_file, idx_bytes(np.where(labels == 9, 12, labels)))
        expected = "labels must be in [0, 10), got 0..12"
    else:
        bad = tmp_path / f"{image_file}.gz"
        bad.write_bytes(gzip.compress(idx_bytes(images))[:-50])
        expected = "bad gzip file (Compressed file ended before the end-of-stream marker was reached)"
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name="fashion_mnist", root=str(tmp_path), val_split=0.0), 32)
    assert str(err.value).startswith(f"{bad}: ") and expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


# ---- one channel, end to end ----------------------------------------------------------------

def test_transforms_normalise_one_channel():
    images = torch.full((2, 1, 32, 32), 255, dtype=torch.uint8)
    x, _ = TrainTransform(32, (0.5,), (0.25,), crop_scale=(0.5, 1.0), hflip=0.5)(
        images, torch.zeros(2), torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))
    y = EvalTransform(64, (0.5,), (0.25,))(images)
    assert y.shape == (2, 1, 64, 64)
    torch.testing.assert_close(y, torch.full_like(y, 2.0))


def test_one_channel_training_and_probe_run(tmp_path):
    write_idx(tmp_path / "data", n_train=60, n_test=20)
    data = DataConfig(name="fashion_mnist", root=str(tmp_path / "data"), val_split=0.0)
    assert data_shape(data) == (10, 1)
    spec = tiny_spec()  # built for 3 channels: the data's 1 replaces it
    reports = []
    result = train_proxy(spec, TrainConfig(epochs=1, batch_size=16, device="cpu"), data, report=reports.append,
                         checkpoint_dir=tmp_path / "run")
    assert [r["epoch"] for r in reports] == [1] and 0 <= reports[0]["val_top1"] <= 100
    trained = spec.replace(in_chans=1)
    assert result.arch_id == trained.arch_id != spec.arch_id
    state = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert state["arch"]["in_chans"] == 1 and state["arch"]["num_classes"] == 10
    assert tuple(state["model"]["stem.0.weight"].shape[:2]) == (16, 1)  # stem conv: 1 input channel
    probe = pixel_linear_probe(data, l2_strengths=(0.1,), iterations=20)
    assert 0 <= probe["val_top1"] <= 100 and probe["train_top1"] > 50  # 1024 pixels fit 60 images


# ---- the real Fashion-MNIST -----------------------------------------------------------------

@pytest.mark.slow
def test_tiny_hybrid_beats_the_pixel_probe_on_real_fashion_mnist(all_cores):
    """20% of Fashion-MNIST's training images (10,800 after holding out 10%, class-balanced), 5
    epochs of the 0.1 M-parameter CMT-style hybrid at 32 px, validated on the 6,000 held out.
    Measured on the development machine (1 thread, load average ~3 on 2 cores): 88.67 % val
    top-1 for the hybrid with train seed 0 (seed 1: 88.73 %; on 2 threads, as here, seed 0:
    88.68 % in 44 s, idle machine); 84.67 % for the pixel linear probe (L2 0.01, the best of its
    default strengths on this subset; 87.7 % on its training images) in ~6 s. Fashion-MNIST's
    pixels are close to linearly separable, so the margin is 4 points, not more; the thresholds
    leave 1.5 points of slack."""
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent (the Debian package dataset-fashion-mnist is not installed)")
    data = DataConfig(name="fashion_mnist", root=str(REAL), val_split=0.1)
    train = TrainConfig(epochs=5, fraction=0.2, batch_size=64, lr=4e-3, warmup_epochs=0.3, device="cpu")
    result = train_proxy(tiny_spec(), train, data)
    probe = pixel_linear_probe(data, fraction=train.fraction, l2_strengths=(0.01,))
    assert 80.0 <= probe["val_top1"] <= 88.0, probe
    assert result.best_val_top1 >= 87.0, result.history
    assert result.best_val_top1 >= probe["val_top1"] + 2.5, (result.history, probe)
