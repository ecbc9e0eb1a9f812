"""Adapters that map a field onto :class:`pitsolve.BandedSystem` (installed as ``pitsolve.adapters``).

* :mod:`pitsolve.adapters.diffusion` — model-library-free diffusion mathematics:
  noise schedules, batched fine-step rules, Eq. 16–17, ``DiffusionSystem``.
* :mod:`pitsolve.adapters.diffusers` — the bridge to Diffusers schedulers,
  UNets and pipelines.
* :mod:`pitsolve.adapters.digits` — a bundled, really trained DDPM on 16×16 digits and a
  digits classifier whose features give a Fréchet distance of samples to real digits.

The core (:mod:`pitsolve`) never imports this package.
"""
