"""Adapters that map a field onto :class:`pitsolve.BandedSystem` (installed as ``pitsolve.adapters``).

* :mod:`pitsolve.adapters.diffusion` — model-library-free diffusion mathematics:
  noise schedules, batched fine-step rules, Eq. 16–17, ``DiffusionSystem``.
* :mod:`pitsolve.adapters.diffusers` — the bridge to Diffusers schedulers,
  UNets and pipelines.

The core (:mod:`pitsolve`) never imports this package.
"""
