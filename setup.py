"""The package list of pitsolve, computed; all other metadata is in pyproject.toml.

Two folders form one import package: ``pitsolve/`` is ``pitsolve`` and the top-level folder
``adapters/`` is ``pitsolve.adapters``.  setuptools' ``packages.find`` names a package after its
folder, so it cannot express that mapping; here every folder with an ``__init__.py`` below either
root becomes a package named from its root's import name, and ``package_dir`` tells setuptools
where ``pitsolve.adapters`` lives.  A new subpackage needs no entry anywhere.
"""

from setuptools import find_packages, setup

# import name -> folder (relative to this file)
ROOTS = {"pitsolve": "pitsolve", "pitsolve.adapters": "adapters"}


def packages() -> list:
    """Every package below each root; a set, since a development link pitsolve/adapters -> ../adapters
    would make find_packages see the adapters twice (under the same names)."""
    found = set(ROOTS)
    for name, folder in ROOTS.items():
        found.update(f"{name}.{sub}" for sub in find_packages(folder))
    return sorted(found)


setup(package_dir=ROOTS, packages=packages())
