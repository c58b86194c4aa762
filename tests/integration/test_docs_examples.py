"""The library example in docs/library.md runs as written (a real backend, a real proxy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_library_example_runs(tmp_path: Path) -> None:
    text = (REPO / "docs" / "library.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(example)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    miss, hit, flushed = result.stdout.splitlines()
    assert miss == "Cache-Status: phantom; fwd=uri-miss; fwd-status=200; stored"
    assert re.fullmatch(r"Cache-Status: phantom; hit; ttl=5\d", hit)
    assert flushed == "flushed 1 entry"
