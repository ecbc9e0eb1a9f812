"""``python -m benchmarks.auto_window [options]``: an alias of ``python -m benchmarks.run --suite auto_window [options]``
(the suite is benchmarks/suites/auto_window.py)."""
from benchmarks.run import alias

alias("auto_window", __name__)
