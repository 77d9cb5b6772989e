"""Data sets: the synthetic generator and its cache, CIFAR and image-folder readers, splits and
subsets, batch transforms, and the errors bad data gets."""
import pickle

import numpy as np
import pytest
import torch

from hvsearch.errors import DataError
from hvsearch.train import DataConfig, load_data, make_loaders, synthetic
from hvsearch.train.augment import EvalTransform, TrainTransform
from hvsearch.train.data import iterate, split_indices
from tests.train.builders import write_cifar, write_image_folder


# ---- synthetic ------------------------------------------------------------------------------

def test_synthetic_is_deterministic_balanced_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HVSEARCH_CACHE", str(tmp_path))
    x, y = synthetic.generate(200, seed=3)
    x2, y2 = synthetic.generate(200, seed=3)
    assert x.shape == (200, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.bincount(y, minlength=10).tolist() == [20] * 10
    assert not np.array_equal(x, synthetic.generate(200, seed=3, stream=1)[0])
    first = synthetic.load(200, seed=3)
    cached = list((tmp_path / "synthetic").glob("*.npz"))
    assert len(cached) == 1
    assert np.array_equal(first["train_x"], x)
    assert len(first["test_y"]) == synthetic.TEST_SIZE
    cached[0].write_bytes(b"damaged")  # a damaged cache entry is regenerated, not fatal
    assert np.array_equal(synthetic.load(200, seed=3)["train_x"], x)


def test_synthetic_key_parts_share_a_row_or_a_column_at_every_distance():
    rng = np.random.Generator(np.random.PCG64(0))
    relation = np.arange(6000) % 2
    a, b, decoy = synthetic.key_cells(relation, rng)
    rows_a, cols_a, rows_b, cols_b = a // 4, a % 4, b // 4, b % 4
    assert np.all(a != b)
    assert np.all((rows_a == rows_b) == (relation == 0)) and np.all((cols_a == cols_b) == (relation == 1))
    # the decoy is aligned with neither key part, so exactly one pair of the three is aligned
    rows_d, cols_d = decoy // 4, decoy % 4
    assert not np.any((rows_d == rows_a) | (rows_d == rows_b) | (cols_d == cols_a) | (cols_d == cols_b))
    distance = np.where(relation == 0, np.abs(cols_a - cols_b), np.abs(rows_a - rows_b))
    # 1, 2 and 3 cells apart equally often (8 to 24 px), for rows and for columns alike
    for r in (0, 1):
        share = np.bincount(distance[relation == r], minlength=4)[1:] / np.sum(relation == r)
        assert np.allclose(share, 1 / 3, atol=0.03), share


def test_synthetic_textures_survive_a_horizontal_flip():
    """A flipped pattern is a pattern of the same texture (another phase, or the other diagonal),
    so flipping keeps every class and is a valid augmentation."""
    p, w = synthetic.PART, 2 * np.pi / 4.0
    period, phase = np.full(1, 4.0), np.array([[0.7, 1.9]])
    flipped_phase = np.pi - w * (p - 1) - phase  # sin(w(P-1-u) + q) = sin(wu + pi - w(P-1) - q)
    for texture, direction, other_phase, other_direction in [
            (0, 1, phase, 1),  # horizontal stripes do not change
            (1, 1, np.array([[flipped_phase[0, 0], 0.0]]), 1),
            (2, 1, np.array([[np.pi - w * (p - 1) / np.sqrt(2) - 0.7, 0.0]]), -1),
            (3, 1, np.array([[flipped_phase[0, 0], 1.9]]), 1),
            (4, 1, phase, 1)]:  # rings are centred
        t = np.array([texture])
        pattern = synthetic.patterns(t, period, phase, np.array([direction]))[0]
        same = synthetic.patterns(t, period, other_phase, np.array([other_direction]))[0]
        assert np.allclose(pattern[:, ::-1], same, atol=1e-9), synthetic.TEXTURES[texture]
    assert [synthetic.CLASSES[c] for c in range(2)] == ["horizontal-row", "horizontal-column"]


def test_synthetic_pixel_means_do_not_depend_on_the_class():
    x, y = synthetic.generate(2000, seed=0)
    means = np.stack([x[y == c].astype(float).mean(0) for c in range(10)]) / 255
    spread = np.abs(means - means.mean(0)).mean()
    # Random stripe phases: per-pixel class means differ by sampling noise only (~0.01 here).
    assert spread < 0.02, spread


# ---- splits and subsets ---------------------------------------------------------------------

def test_split_indices_balanced_disjoint_nested():
    labels = np.repeat(np.arange(4), 25)
    train, val = split_indices(labels, 0.2, 1.0, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 100
    assert np.bincount(labels[val]).tolist() == [5] * 4
    half, val_half = split_indices(labels, 0.2, 0.5, seed=0)
    quarter, _ = split_indices(labels, 0.2, 0.25, seed=0)
    assert np.array_equal(val_half, val)  # the held-out split does not depend on the fraction
    assert set(quarter) <= set(half) <= set(train)
    assert np.bincount(labels[half]).tolist() == [10] * 4
    assert not np.array_equal(split_indices(labels, 0.2, 0.5, seed=1)[0], half)
    train0, val0 = split_indices(labels, 0.0, 1.0, seed=0)
    assert len(val0) == 0 and len(train0) == 100


# ---- CIFAR ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_the_python_format(tmp_path, name):
    folder = write_cifar(tmp_path, name)
    for root in (tmp_path, folder):  # the extracted folder or the one holding it
        splits = load_data(DataConfig(name=name, root=str(root), val_split=0.0), resolution=32)
        n_classes = 10 if name == "cifar10" else 100
        assert splits.num_classes == n_classes and splits.classes[1] in ("class1", "fine1")
        assert (len(splits.train), len(splits.val)) == ((100, 20) if name == "cifar10" else (200, 200))
        img, label = splits.train[0]
        assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and 0 <= label < n_classes
    held_out = load_data(DataConfig(name=name, root=str(tmp_path), val_split=0.2), 32, fraction=0.5)
    assert len(held_out.val) == n_classes * (2 if name == "cifar10" else 1)  # round(0.2 · 10), or 1 of 2
    assert len(held_out.train) == n_classes * (4 if name == "cifar10" else 1)  # ceil(0.5 · 8), ceil(0.5 · 1)


def test_cifar_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "nowhere")), 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no cifar10 files under .*empty: expected data_batch_1"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "empty")), 32)
    folder = write_cifar(tmp_path)
    bad = folder / "data_batch_3"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match=f"{bad} is not a CIFAR python batch file"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), 32)
    bad.write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}))
    with pytest.raises(DataError, match=f"{bad}: 'data' must be uint8 N×3072"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), 32)
    bad.write_bytes(pickle.dumps({"pixels": 1}))
    with pytest.raises(DataError, match=f"{bad} is not a cifar-10-batches-py batch: it lacks"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), 32)
    folder = write_cifar(tmp_path / "other")
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match=f"missing CIFAR file {folder / 'data_batch_5'}"):
        load_data(DataConfig(name="cifar10", root=str(folder)), 32)


def test_cifar_unpickling_runs_no_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    folder = write_cifar(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)), 32)


# ---- image folders --------------------------------------------------------------------------

def test_image_folder_decodes_with_pillow(tmp_path):
    write_image_folder(tmp_path)
    splits = load_data(DataConfig(name="imagefolder", root=str(tmp_path), val_split=0.0), resolution=32)
    assert splits.classes == ("cat", "dog", "fox") and len(splits.train) == 18 and len(splits.val) == 6
    img, label = splits.train[0]
    assert img.shape == (3, 37, 37) and img.dtype == torch.uint8  # 32 / crop_pct 0.875
    assert splits.val[0][0].shape == (3, 32, 32) and splits.in_chans == 3


def test_folder_training_images_framed_as_validation_frames_them(tmp_path):
    """The probe and the zero-cost batch look at training images as validation would: the centre
    32-px square of the 37-px decode, not the whole decode shrunk to 32."""
    from hvsearch.train.augment import as_validated
    from hvsearch.train.data import FolderImages

    write_image_folder(tmp_path)
    splits = load_data(DataConfig(name="imagefolder", root=str(tmp_path), val_split=0.0), resolution=32)
    files = splits.train.samples[:3]
    train_view = torch.stack([splits.train[i][0] for i in range(3)])  # the 37-px decode
    validation_view = torch.stack([FolderImages(files, short=37, crop=32)[i][0] for i in range(3)])
    framed = as_validated(train_view, 32, in_memory=False)
    assert framed.shape == (3, 3, 32, 32) and torch.equal(framed, train_view[..., 2:34, 2:34])
    for i in range(3):  # validation's square of the same picture, up to the 1-px rounding of a centre
        shifts = [train_view[i, :, t:t + 32, u:u + 32] for t in (2, 3) for u in (2, 3)]
        assert any(torch.equal(validation_view[i], v) for v in shifts)
    same = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    assert as_validated(same, 32, in_memory=True) is same  # in-memory sets: EvalTransform resizes


def test_image_folder_errors_name_the_path(tmp_path):
    cfg = DataConfig(name="imagefolder", root=str(tmp_path / "missing"), val_split=0.0)
    with pytest.raises(DataError, match=f"image folder root {tmp_path / 'missing'} does not exist"):
        load_data(cfg, 32)
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'a'} has no train/ folder"):
        load_data(cfg.replace(root=str(tmp_path / "a")), 32)
    root = write_image_folder(tmp_path / "b", val=False)
    with pytest.raises(DataError, match=f"{root} has no val/ folder; set data.val_split"):
        load_data(cfg.replace(root=str(root)), 32)
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"class folder {root / 'train' / 'emu'} has no images"):
        load_data(cfg.replace(root=str(root), val_split=0.2), 32)
    root = write_image_folder(tmp_path / "single", per_class=1, val=False)
    with pytest.raises(DataError, match=f"the validation split of {root} is empty"):
        load_data(cfg.replace(root=str(root), val_split=0.5), 32)
    root = write_image_folder(tmp_path / "c")
    (root / "val" / "owl").mkdir()
    with pytest.raises(DataError, match=f"{root / 'val' / 'owl'} is not a class of the training folder"):
        load_data(cfg.replace(root=str(root)), 32)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named(tmp_path, workers):
    root = write_image_folder(tmp_path)
    bad = root / "train" / "dog" / "3.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    splits = load_data(DataConfig(name="imagefolder", root=str(root), val_split=0.0), 32)
    train, _, sampler = make_loaders(splits, batch_size=4, workers=workers, device=torch.device("cpu"), seed=0)
    with pytest.raises(DataError) as err:
        for _ in iterate(train):
            pass
    assert str(err.value).startswith(f"cannot decode image {bad}: ")
    assert "Traceback" not in str(err.value)


# ---- transforms -----------------------------------------------------------------------------

def test_train_transform_crop_flip_normalise_mixup():
    from timm.data import Mixup

    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    labels = torch.arange(6) % 3
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    g = torch.Generator().manual_seed(0)
    flip_only = TrainTransform(40, mean, std, crop_scale=None, hflip=1.0)
    x, y = flip_only(images, labels, g)
    torch.testing.assert_close(x, (images.flip(3).float() / 255 - 0.5) / 0.25)
    assert torch.equal(y, labels)
    crop = TrainTransform(32, mean, std, crop_scale=(0.3, 1.0), hflip=0.5)
    a, _ = crop(images, labels, torch.Generator().manual_seed(1))
    b, _ = crop(images, labels, torch.Generator().manual_seed(1))
    c, _ = crop(images, labels, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 2.0 + 1e-5  # stays within the normalised pixel range
    mixed = TrainTransform(32, mean, std, crop_scale=(0.3, 1.0), hflip=0.5,
                           mixup=Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=3))
    x, soft = mixed(images, labels, g)
    assert x.shape == (6, 3, 32, 32) and soft.shape == (6, 3)
    torch.testing.assert_close(soft.sum(1), torch.ones(6))


def test_eval_transform_resizes_and_normalises():
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = EvalTransform(64, (0.5,) * 3, (0.5,) * 3)(images)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, torch.ones_like(out))
