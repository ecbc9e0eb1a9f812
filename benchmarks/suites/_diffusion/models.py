"""Samplers and models of the diffusion suite: the digits UNet and the exact GMM denoiser, one schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Sequence, Tuple

import torch


# -- samplers and models ---------------------------------------------------------------------------------
#: Benchmark kind → the sampler table's name (pitsolve.adapters.diffusion.rules.registry.SAMPLERS); "dpm++" is
#: the suite's historical key for "dpmsolver++", kept so earlier records stay comparable.
KIND_ALIASES = {"dpm++": "dpmsolver++"}


def sampler_kinds() -> Tuple[str, ...]:
    """The kinds ``KIND-T`` accepts: every name of the sampler table, plus the aliases."""
    from pitsolve.adapters.diffusion.rules.registry import SAMPLERS as TABLE

    return tuple(KIND_ALIASES) + tuple(e.name for e in TABLE)


@dataclass(frozen=True)
class Sampler:
    key: str  # "DDIM-50"
    kind: str  # a name of the sampler table ("ddpm", "ddim", "euler", …) or an alias ("dpm++")
    steps: int  # T

    def scheduler(self, config: Mapping):
        """The Diffusers scheduler of this kind, from the model's scheduler ``config`` and the table's extra config."""
        import diffusers

        from pitsolve.adapters.diffusion.rules.registry import sampler

        entry = sampler(KIND_ALIASES.get(self.kind, self.kind))
        return getattr(diffusers, entry.scheduler).from_config(config, **entry.config)


SAMPLERS = (Sampler("DDPM-1000", "ddpm", 1000), Sampler("DDIM-50", "ddim", 50), Sampler("DDIM-25", "ddim", 25),
            Sampler("DPM++-50", "dpm++", 50), Sampler("DPM++-25", "dpm++", 25))
QUICK_SAMPLERS = (Sampler("DDPM-50", "ddpm", 50), Sampler("DDIM-25", "ddim", 25), Sampler("DPM++-25", "dpm++", 25))


@dataclass
class Model:
    key: str
    label: str
    unet: torch.nn.Module
    config: Mapping  # the scheduler config every sampler is built from
    shape: Tuple[int, ...]  # one image


def load_models(keys: Sequence[str], device: str) -> List[Model]:
    from pitsolve.adapters.diffusion import GaussianMixtureDenoiser
    from pitsolve.adapters.digits import load_pipeline

    pipe = load_pipeline(device)
    config = dict(pipe.scheduler.config)
    models = []
    for key in keys:
        if key == "digits":
            models.append(Model("digits", "digits DDPM (bundled UNet, 16x16)", pipe.unet.eval(), config,
                                (1, 1, 16, 16)))
        elif key == "gmm":
            gmm = GaussianMixtureDenoiser.random((1, 16, 16), 8, alphas_cumprod=pipe.scheduler.alphas_cumprod,
                                                 seed=0).to(device)
            models.append(Model("gmm", "Gaussian mixture (exact ε, 8 components, 1x16x16)", gmm, config,
                                (1, 1, 16, 16)))
        else:
            raise SystemExit(f"diffusion suite: unknown model {key!r}; choose digits or gmm")
    return models
