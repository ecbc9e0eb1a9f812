"""A bundled, really trained DDPM on scikit-learn's digits and a classifier that measures its samples.

* :func:`load_digits_images` — the data: 16×16 one-channel images in [-1, 1], fixed train/test split.
* :func:`load_pipeline`, ``MODEL_DIR`` — the trained ``DDPMPipeline`` (≈ 0.97 M-parameter
  ``UNet2DModel``), loaded offline; :func:`sample_digits` runs it into a tensor.
* :func:`load_flow`, ``FLOW_MODEL_DIR`` — a second trained model of the same architecture: flow
  matching (rectified flow, velocity prediction) for ``FlowMatchEulerDiscreteScheduler``.
* :class:`DigitsClassifier`, :func:`load_classifier` — the bundled CNN classifier.
* :func:`frechet_distance`, :func:`predicted_labels`, :func:`classifier_confidence` — sample quality.

All the weights are trained by the scripts in ``examples/``
(``train_digits.py``, ``train_digits_flow.py``, ``train_digits_classifier.py``).

Needs the extra ``pitsolve[diffusers]``: Diffusers and safetensors to load the models, scikit-learn
for the data, SciPy for the Fréchet distance.
"""

from .._extras import require_extra

require_extra("diffusers", "diffusers", "safetensors", user="pitsolve.adapters.digits")

from .classifier import CLASSIFIER_DIR, DigitsClassifier, load_classifier, save_classifier  # noqa: E402
from .data import load_digits_images  # noqa: E402
from .metrics import classifier_confidence, classifier_features, frechet_distance, predicted_labels  # noqa: E402
from .model import (  # noqa: E402
    FLOW_MODEL_DIR,
    MODEL_DIR,
    UNET_CONFIG,
    build_unet,
    load_flow,
    load_pipeline,
    sample_digits,
)

__all__ = [
    "CLASSIFIER_DIR",
    "FLOW_MODEL_DIR",
    "MODEL_DIR",
    "UNET_CONFIG",
    "DigitsClassifier",
    "build_unet",
    "classifier_confidence",
    "classifier_features",
    "frechet_distance",
    "load_classifier",
    "load_digits_images",
    "load_flow",
    "load_pipeline",
    "predicted_labels",
    "sample_digits",
    "save_classifier",
]
