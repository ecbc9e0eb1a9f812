"""The bundled digits DDPM and classifier: they load offline, they are trained, and the metric is right."""

from __future__ import annotations


import pytest
import torch

from pitsolve.adapters import digits

from conftest import load_example

# Measured test accuracy of the bundled classifier (CLASSIFIER_DIR/config.json): 0.983; minus a margin.
MIN_TEST_ACCURACY = 0.95


@pytest.fixture(scope="module")
def classifier():
    return digits.load_classifier()


@pytest.fixture(scope="module")
def test_split():
    return digits.load_digits_images("test")


def test_data_split_shapes_and_range():
    x_train, y_train = digits.load_digits_images("train")
    x_test, y_test = digits.load_digits_images("test")
    x_all, _ = digits.load_digits_images("all")
    assert x_train.shape == (1437, 1, 16, 16) and x_test.shape == (360, 1, 16, 16) and len(x_all) == 1797
    assert x_all.min() == -1.0 and x_all.max() == 1.0
    assert set(y_test.tolist()) == set(range(10)) and y_train.bincount().min() >= 130
    with pytest.raises(ValueError, match="split='val'"):
        digits.load_digits_images("val")


def test_bundled_pipeline_loads_offline_and_samples(report):
    from diffusers import DDIMScheduler, DDPMPipeline

    pipe = digits.load_pipeline()
    assert isinstance(pipe, DDPMPipeline)
    n_params = sum(p.numel() for p in pipe.unet.parameters())
    assert 500_000 <= n_params <= 1_000_000, n_params
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    x = digits.sample_digits(pipe, 6, num_inference_steps=4, seed=1)
    assert x.shape == (6, 1, 16, 16) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
    assert torch.equal(x, digits.sample_digits(pipe, 6, num_inference_steps=4, seed=1))
    report(f"digits DDPM: {n_params:,} parameters")


@pytest.mark.slow
def test_bundled_samples_are_digits(classifier, report):
    """DDIM-20 samples: far closer to the real digits than noise is, and every digit class appears."""
    from diffusers import DDIMScheduler

    pipe = digits.load_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    x = digits.sample_digits(pipe, 200, num_inference_steps=20, seed=0)
    fd = digits.frechet_distance(x, classifier=classifier)
    noise = torch.rand(1000, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fd_noise = digits.frechet_distance(noise, classifier=classifier)
    labels = digits.predicted_labels(x, classifier).bincount(minlength=10)
    confidence = digits.classifier_confidence(x, classifier).mean().item()
    report(f"digits DDIM-20 (200 samples): Fréchet {fd:.2f} vs noise {fd_noise:.1f}; "
           f"labels {labels.tolist()}; mean confidence {confidence:.3f}")
    # Measured: 9.1 (200 real train digits: 4.0 … 6.8; noise: 4150); mean confidence 0.94 (real test digits: 0.97).
    assert fd < 20.0, (fd, fd_noise)
    assert (labels > 0).all(), labels.tolist()
    assert confidence > 0.85


def test_bundled_classifier_accuracy(classifier, test_split, report):
    x, y = test_split
    acc = (digits.predicted_labels(x, classifier) == y).double().mean().item()
    report(f"digits classifier: test accuracy {acc:.4f} on {len(y)} images")
    assert acc >= MIN_TEST_ACCURACY
    assert classifier.features(x[:5]).shape == (5, 64)


def test_frechet_real_vs_real_far_below_real_vs_noise(classifier, test_split, report):
    x_train, _ = digits.load_digits_images("train")
    noise = torch.rand(1000, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    floor = digits.frechet_distance(x_train, classifier=classifier)
    ceiling = digits.frechet_distance(noise, test_split[0], classifier=classifier)
    report(f"digits Fréchet: train vs test {floor:.2f}, noise vs test {ceiling:.1f}")
    assert 0.0 < floor < 0.01 * ceiling  # measured 1.44 and 4150
    assert abs(digits.frechet_distance(test_split[0], classifier=classifier)) < 1e-6 * ceiling


class _FlattenFeatures(torch.nn.Module):
    """A fake classifier whose features are the pixels themselves, to check the formula in closed form."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return x.flatten(1)


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    """For Σ₁, Σ₂ diagonal, d² = ‖μ₁ − μ₂‖² + Σ_i (σ₁ᵢ − σ₂ᵢ)²; checked on the sample moments."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 1, 1, 3, generator=g, dtype=torch.float64)
    b = 0.5 + 2.0 * torch.randn(4000, 1, 1, 3, generator=g, dtype=torch.float64)
    # Whiten the sample covariances to exactly diagonal so the closed form holds for the sample moments too.
    a_f, b_f = a.flatten(1), b.flatten(1)

    def whiten(f):  # exact identity sample covariance, same sample mean
        return (f - f.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(f.T))).T + f.mean(0)

    a_f, b_f = whiten(a_f), 2.0 * (whiten(b_f) - b_f.mean(0)) + b_f.mean(0)
    expected = ((a_f.mean(0) - b_f.mean(0)) ** 2).sum().item() + 3 * (1.0 - 2.0) ** 2
    got = digits.frechet_distance(b_f.view(-1, 1, 1, 3), a_f.view(-1, 1, 1, 3), classifier=_FlattenFeatures())
    assert got == pytest.approx(expected, rel=1e-9)


def test_trace_sqrt_product_matches_scipy_sqrtm():
    """Tr (Σ₁Σ₂)^{1/2} by the symmetric route equals scipy's sqrtm of the product on a well-conditioned pair."""
    import numpy as np
    from scipy import linalg

    from pitsolve.adapters.digits.metrics import _trace_sqrt_product

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 12, 12))
    s1, s2 = a @ a.T + 0.1 * np.eye(12), b @ b.T + 0.1 * np.eye(12)
    assert _trace_sqrt_product(s1, s2) == pytest.approx(np.trace(linalg.sqrtm(s1 @ s2)).real, rel=1e-10)
    # Singular Σ₁ (a constant feature): still finite, and equal to the trace over the live block.
    s1[0, :] = s1[:, 0] = 0.0
    assert _trace_sqrt_product(s1, s2) == pytest.approx(
        np.trace(linalg.sqrtm(linalg.sqrtm(s1[1:, 1:]) @ s2[1:, 1:] @ linalg.sqrtm(s1[1:, 1:]))).real, rel=1e-8
    )


def test_train_digits_smoke(tmp_path):
    out = tmp_path / "ddpm"
    summary = load_example("train_digits").main(["--smoke", "--out", str(out)])
    assert summary["steps"] == 3 and summary["parameters"] == sum(p.numel() for p in digits.build_unet().parameters())
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 3
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = digits.load_pipeline(model_dir=out)
    assert digits.sample_digits(pipe, 2, num_inference_steps=2).shape == (2, 1, 16, 16)


def test_train_classifier_smoke(tmp_path):
    out = tmp_path / "classifier"
    result = load_example("train_digits_classifier").main(["--smoke", "--out", str(out)])
    model = digits.load_classifier(out)
    x, y = digits.load_digits_images("test")
    acc = (digits.predicted_labels(x, model) == y).double().mean().item()
    assert acc == pytest.approx(result["test_accuracy"], abs=1e-12)


def test_missing_weights_name_the_training_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_digits.py"):
        digits.load_pipeline(model_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="train_digits_classifier.py"):
        digits.load_classifier(tmp_path)
