"""Batch transforms on the training device: uint8 images in, normalised float images out.

Training: random-resized crop and horizontal flip in one ``grid_sample`` per batch (each image
its own crop box and flip), normalisation, then timm's ``Mixup`` (mixup / CutMix with soft,
label-smoothed targets) when asked. Evaluation: resize to the resolution when needed, normalise.

Working on whole batches on the device keeps the DataLoader's job to moving uint8 tensors (and
decoding files, for image folders), which is what lets in-memory sets run without workers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CROP_RATIO = (3 / 4, 4 / 3)


class TrainTransform:
    """Random-resized crop (area share in ``crop_scale``, aspect ratio in 3/4–4/3; None = no
    crop), horizontal flip with probability ``hflip``, resize to ``resolution``, normalise,
    then ``mixup`` (a timm ``Mixup``) if given. Returns images and targets: class indices, or
    soft targets when mixing."""

    def __init__(self, resolution: int, mean, std, crop_scale: tuple[float, float] | None, hflip: float,
                 mixup=None):
        self.resolution, self.crop_scale, self.hflip, self.mixup = resolution, crop_scale, hflip, mixup
        self.normalise = Normalise(mean, std)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float()
        n, device = x.shape[0], x.device
        flip = torch.rand(n, device=device, generator=generator) < self.hflip
        if self.crop_scale is None:
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
            if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
                x = resize(x, self.resolution)
        else:
            x = self._crop_flip(x, flip, generator)
        x = self.normalise(x)
        if self.mixup is not None:
            return self.mixup(x, labels)
        return x, labels

    def _crop_flip(self, x: torch.Tensor, flip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image's crop box as an affine map of the output grid onto the input: width and
        height (as shares of the side) from an area share and a log-uniform aspect ratio,
        clipped to the image; the box centre uniform where the box fits; flips negate x."""
        n, device = x.shape[0], x.device
        lo, hi = self.crop_scale
        u = torch.rand(4, n, device=device, generator=generator)
        area = lo + (hi - lo) * u[0]
        log_r = math.log(CROP_RATIO[0]) + (math.log(CROP_RATIO[1]) - math.log(CROP_RATIO[0])) * u[1]
        ratio = torch.exp(log_r)
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        # normalised coordinates span [-1, 1]: a box of share w has half-width w, centre in ±(1 - w)
        cx = (2 * u[2] - 1) * (1 - w)
        cy = (2 * u[3] - 1) * (1 - h)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = torch.where(flip, -w, w)
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [n, x.shape[1], self.resolution, self.resolution], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` × ``size`` square of a batch of images at least that large."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def as_validated(images: torch.Tensor, resolution: int, in_memory: bool) -> torch.Tensor:
    """Training images framed as validation frames its own: an image folder's training images are
    decoded larger (``resolution / crop_pct``) for the random crops, and validation takes the
    centre ``resolution`` square of the same decode, so they are centre-cropped; an in-memory
    set's are resized by :class:`EvalTransform` as its validation images are."""
    if not in_memory and min(images.shape[-2:]) > resolution:
        return center_crop(images, resolution)
    return images


class EvalTransform:
    """Resize to ``resolution`` if needed (antialiased bilinear) and normalise."""

    def __init__(self, resolution: int, mean, std):
        self.resolution = resolution
        self.normalise = Normalise(mean, std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = resize(x, self.resolution)
        return self.normalise(x)


class Normalise:
    """``(x - 255·mean) / (255·std)`` for uint8-valued images, per channel: ``mean`` and ``std``
    hold one value per channel of the images (3 for RGB, 1 for grey-scale)."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:  # once: a host copy every batch would stall the GPU's queue
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return (x - self.mean) / self.std


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])
