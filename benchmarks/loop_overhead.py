"""``python -m benchmarks.loop_overhead [options]``: an alias of ``python -m benchmarks.run --suite loop_overhead [options]``
(the suite is benchmarks/suites/loop_overhead.py)."""
from benchmarks.run import alias

alias("loop_overhead", __name__)
