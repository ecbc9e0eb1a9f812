"""``python -m benchmarks.bridge_overhead [options]``: an alias of ``python -m benchmarks.run --suite bridge_overhead [options]``
(the suite is benchmarks/suites/bridge_overhead.py)."""
from benchmarks.run import alias

alias("bridge_overhead", __name__)
