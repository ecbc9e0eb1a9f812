"""``python -m benchmarks.oracle [options]``: an alias of ``python -m benchmarks.run --suite oracle [options]``
(the suite is benchmarks/suites/oracle.py)."""
from benchmarks.run import alias

alias("oracle", __name__)
