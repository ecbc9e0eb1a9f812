"""``python -m benchmarks.adjoint [options]``: an alias of ``python -m benchmarks.run --suite adjoint [options]``
(the suite is benchmarks/suites/adjoint.py)."""
from benchmarks.run import alias

alias("adjoint", __name__)
