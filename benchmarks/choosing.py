"""``python -m benchmarks.choosing [options]``: an alias of ``python -m benchmarks.run --suite choosing [options]``
(the suite is benchmarks/suites/choosing.py)."""
from benchmarks.run import alias

alias("choosing", __name__)
