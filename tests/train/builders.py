"""Small things the training tests build: a tiny hybrid spec, and CIFAR / IDX / image-folder data
sets written to disk in their real formats."""
import gzip
import pickle

import numpy as np
from PIL import Image

from hvsearch.arch import ModelSpec, StageSpec
from hvsearch.families.cmt.config import CMTAttentionConfig, CMTStemConfig, IRFFNConfig
from hvsearch.arch.common import NormPoolHeadConfig, PatchDownsampleConfig


def tiny_spec(widths=(16, 32, 48, 64), name="tiny") -> ModelSpec:
    """A 4-stage CMT-style hybrid (conv stem, LMHSA + IRFFN, depth 1) of ~0.1 M parameters."""
    heads, sr = (1, 2, 2, 4), (2, 2, 1, 1)
    stages = [StageSpec(depth=1, width=w, downsample=PatchDownsampleConfig(),
                        mixer=CMTAttentionConfig(heads=min(h, w // 8), sr_ratio=r), ffn=IRFFNConfig(ratio=2.0))
              for w, h, r in zip(widths, heads, sr)]
    return ModelSpec(stem=CMTStemConfig(width=widths[0]), stages=tuple(stages), head=NormPoolHeadConfig(),
                     resolution=32, num_classes=10, name=name).validate()


def write_cifar(root, name="cifar10", per_batch=20, seed=0):
    """A miniature CIFAR folder in the python pickle format (protocol 2, as the originals)."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, classes, key = root / "cifar-10-batches-py", 10, "labels"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta = ("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    else:
        folder, classes, key = root / "cifar-100-python", 100, "fine_labels"
        files, per_batch = ["train", "test"], 10 * per_batch  # two images per class
        meta = ("meta", {"fine_label_names": [f"fine{i}" for i in range(100)]})
    folder.mkdir(parents=True)
    for f in files:
        batch = {"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                 key: [int(i % classes) for i in range(per_batch)],
                 "filenames": [f"{i}.png" for i in range(per_batch)]}
        (folder / f).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return folder


def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=6, val=True, seed=0):
    """``root/train/<class>/*`` (and ``val/``) of small JPEG and PNG images of varying size."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", 2)) if val else (("train", per_class),):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(30, 60, size=2)
                img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
                img.save(d / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def idx_bytes(array, magic=None) -> bytes:
    """``array`` (uint8) as an IDX file: magic 0x0000080<ndim>, big-endian dimensions, the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x800 + array.ndim if magic is None else magic
    dims = np.array(array.shape, dtype=">u4").tobytes()
    return magic.to_bytes(4, "big") + dims + array.tobytes()


def write_idx(folder, n_train=30, n_test=10, gz=True, seed=0):
    """The four IDX files of a miniature Fashion-MNIST-like set (28×28 images of random pixels,
    labels cycling through the 10 classes) in ``folder``; returns {file stem: (images or labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = (np.arange(n) % 10).astype(np.uint8)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays
