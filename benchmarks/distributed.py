"""``python benchmarks/distributed.py [options]`` (or ``python -m benchmarks.distributed``) runs
``python -m benchmarks.run --suite distributed [options]`` (benchmarks/suites/distributed.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository on sys.path
from benchmarks.run import alias  # noqa: E402

alias("distributed", __name__)
