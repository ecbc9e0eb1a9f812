"""``python -m benchmarks.error_matrix [options]``: an alias of ``python -m benchmarks.run --suite error_matrix [options]``
(the suite is benchmarks/suites/error_matrix.py)."""
from benchmarks.run import alias

alias("error_matrix", __name__)
