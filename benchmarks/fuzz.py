"""The long fuzz run: the Hypothesis properties of tests/integration/test_properties.py with many
more examples than CI's bounded run.

    python benchmarks/fuzz.py --examples 2000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per property")
    args = parser.parse_args()
    env = dict(os.environ, PHANTOM_FUZZ_EXAMPLES=str(args.examples))
    test = ROOT / "tests" / "integration" / "test_properties.py"
    # pytest-timeout's 60 s default is for CI; the long run takes as long as it takes.
    command = [sys.executable, "-m", "pytest", "-q", "--timeout=0", str(test)]
    raise SystemExit(subprocess.call(command, cwd=ROOT, env=env))


if __name__ == "__main__":
    main()
