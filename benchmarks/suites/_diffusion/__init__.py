"""The diffusion suite's parts, by concern (the suite itself is :mod:`benchmarks.suites.diffusion`).

* :mod:`.models` — the samplers and the models (digits UNet, exact GMM denoiser);
* :mod:`.methods` — the parallel methods and their grids of settings;
* :mod:`.search` — one (model, sampler) case, its measuring runs and the tolerance bisection;
* :mod:`.measure` — the rows of one case (search, choice, alternating wall times, Fréchet distance) and
  the batch-cost curve;
* :mod:`.report` — the targets table, the prose sections and the figures.
"""
