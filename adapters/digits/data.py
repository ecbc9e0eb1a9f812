"""scikit-learn's bundled handwritten digits as 16×16 one-channel images in [-1, 1].

``sklearn.datasets.load_digits`` holds 1797 images of 8×8 pixels with integer
values 0..16 (UCI "Optical Recognition of Handwritten Digits").  They are
scaled by ``v / 8 − 1`` onto [-1, 1] (0 → −1 background, 16 → +1 ink) and
upsampled 8 → ``size`` by bilinear interpolation (``align_corners=False``),
which keeps the range.  The train/test split is fixed: stratified by label,
20 % test, ``random_state=0`` (1437 train / 360 test images).  The DDPM and
the classifier are trained on ``"train"``; ``"test"`` is the held-out
reference of :func:`pitsolve.adapters.digits.frechet_distance`.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .._extras import require_extra

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_images(split: str = "train", size: int = 16) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: float32 ``[n, 1, size, size]`` in [-1, 1] and int64 ``[n]`` in 0..9."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}.")
    if not (isinstance(size, int) and size >= 8):
        raise ValueError(f"size={size!r}: expected an int >= 8 (the digits are 8×8).")
    require_extra("diffusers", "sklearn", user="load_digits_images")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    if split == "all":
        return images, labels
    index = torch.arange(len(labels)).numpy()
    train, test = train_test_split(
        index, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels.numpy()
    )
    chosen = torch.as_tensor(train if split == "train" else test)
    return images[chosen], labels[chosen]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]² pixels, filling with −1 (background)."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
