"""Sample quality of generated digits, measured with the bundled classifier.

``frechet_distance`` is the FID recipe (Heusel et al. 2017, "GANs trained by
a two time-scale update rule converge to a local Nash equilibrium")
with Inception-v3 replaced by our own :class:`DigitsClassifier`: both sets of
images are mapped to the classifier's 64 penultimate features, a Gaussian
(mean μ, covariance Σ) is fitted to each, and

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}).

The value returned is d² (as FID reports it).  It is only comparable with
other values from the same classifier weights and the same number of
samples: like FID it is biased upwards for small sets (the sample
covariance of few images is noisy).  Measured with the bundled classifier
against the 360 real test digits (the default reference):

========================================================  ======
images compared with the test split                       d²
========================================================  ======
all 1437 real train digits (the floor)                    1.4
360 random real train digits (5 draws)                    2.1 … 4.8
200 random real train digits (5 draws)                    4.0 … 6.8
64 random real train digits (5 draws)                     15 … 25
1000 images of uniform noise in [-1, 1] (the ceiling)     4150
1000 images of N(0, 1) noise clipped to [-1, 1]           3470
360 samples of the bundled DDPM, DDPM 1000 steps          4.9
360 samples of the bundled DDPM, DDIM 50 steps (η = 0)    6.2
360 samples of the bundled DDPM, DDIM 20 steps            6.4
360 samples of the bundled DDPM, DDIM 10 steps            9.9
360 samples of the bundled flow model, Euler 28 steps     6.2
360 samples of the bundled DDPM, DDIM 28 steps            5.9
========================================================  ======
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .._extras import require_extra
from .classifier import DigitsClassifier, load_classifier
from .data import load_digits_images


@torch.no_grad()
def _apply(classifier: DigitsClassifier, images: torch.Tensor, method: str, batch: int = 512) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images of shape {tuple(images.shape)}: expected [n, 1, H, W] in [-1, 1].")
    classifier.eval()
    device = next(classifier.parameters()).device
    fn = getattr(classifier, method)
    return torch.cat([fn(images[i : i + batch].to(device, torch.float32)).cpu() for i in range(0, len(images), batch)])


def classifier_features(images: torch.Tensor, classifier: Optional[DigitsClassifier] = None) -> torch.Tensor:
    """``[n, F]`` penultimate features of ``images`` (``[n, 1, 16, 16]`` in [-1, 1])."""
    return _apply(classifier or load_classifier(), images, "features")


def predicted_labels(images: torch.Tensor, classifier: Optional[DigitsClassifier] = None) -> torch.Tensor:
    """``[n]`` most likely digit of each image."""
    return _apply(classifier or load_classifier(), images, "forward").argmax(dim=1)


def classifier_confidence(images: torch.Tensor, classifier: Optional[DigitsClassifier] = None) -> torch.Tensor:
    """``[n]`` softmax probability of each image's most likely digit (high for clean digits)."""
    return _apply(classifier or load_classifier(), images, "forward").softmax(dim=1).max(dim=1).values


def _gaussian(features: torch.Tensor):
    f = features.double().numpy()
    if len(f) < 2:
        raise ValueError(f"{len(f)} image(s): a covariance needs at least 2.")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(
    samples: torch.Tensor,
    reference: Optional[torch.Tensor] = None,
    classifier: Optional[DigitsClassifier] = None,
) -> float:
    """FID-style d² between ``samples`` and ``reference`` (default: the real test digits) in classifier features."""
    classifier = classifier or load_classifier()
    if reference is None:
        reference = load_digits_images("test")[0]
    mu1, s1 = _gaussian(classifier_features(samples, classifier))
    mu2, s2 = _gaussian(classifier_features(reference, classifier))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2))


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr (Σ₁ Σ₂)^{1/2} for symmetric PSD Σ₁, Σ₂, as Tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}.

    Σ₁ Σ₂ is similar to the symmetric PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2}, so the
    eigenvalues of its principal square root are the square roots of that
    matrix's eigenvalues.  Unlike ``scipy.linalg.sqrtm(Σ₁ Σ₂)`` (pytorch-fid's
    route) this stays real and exact when a covariance is singular, as it is
    whenever a feature (a ReLU unit) is constant over a set of images.
    """
    require_extra("diffusers", "scipy", user="frechet_distance")
    from scipy import linalg

    w, v = linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sqrt(np.clip(inner, 0.0, None)).sum())
