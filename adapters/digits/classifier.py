"""A small CNN digit classifier whose penultimate layer is the feature space of the Fréchet distance.

Trained by ``examples/train_digits_classifier.py`` on the ``"train"`` split
(with ±1-pixel random shifts) and bundled in ``CLASSIFIER_DIR`` as
``model.safetensors`` plus ``config.json`` (the constructor's arguments and
the measured test accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .model import WEIGHTS_DIR

CLASSIFIER_DIR = WEIGHTS_DIR / "classifier"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class DigitsClassifier(nn.Module):
    """16×16×1 → conv w → conv w → pool → conv 2w → conv ``features`` → global average → linear 10.

    ``features(x)`` is the ``[n, features]`` penultimate activation: the spatial
    mean of the last convolution's SiLU maps, the analogue of Inception-v3's
    pool3 features that FID uses.  SiLU rather than ReLU because ReLU units
    die: with ReLU, 18 of the 64 averaged features (38 of 64 with a fully
    connected ReLU layer instead of the average) were constant over the real
    test digits, which wastes those dimensions of the distance and makes
    their covariance singular.  ``forward(x)`` is the ``[n, 10]`` logits.
    Inputs are images in [-1, 1] as
    :func:`pitsolve.adapters.digits.load_digits_images` returns them.
    """

    def __init__(self, features: int = 64, width: int = 32, image_size: int = 16):
        super().__init__()
        if image_size % 2:
            raise ValueError(f"image_size={image_size} must be even (one 2×2 pooling).")
        self.config = dict(features=features, width=width, image_size=image_size)
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, features, 3, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(features, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def save_classifier(model: DigitsClassifier, folder: Union[str, Path], **metadata) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``model.config`` plus ``metadata``) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({**model.config, **metadata}, indent=2) + "\n")
    return folder


def load_classifier(folder: Optional[Union[str, Path]] = None, device: Union[str, torch.device] = "cpu"):
    """The bundled classifier (or the one saved in ``folder``), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(CLASSIFIER_DIR if folder is None else folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"No {WEIGHTS_FILE} in {folder}; train one with `python examples/train_digits_classifier.py`."
        )
    config = json.loads((folder / CONFIG_FILE).read_text())
    model = DigitsClassifier(**{k: config[k] for k in ("features", "width", "image_size")})
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.to(device).eval()
