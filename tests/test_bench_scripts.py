"""Every benchmark starts from a plain checkout, as the README and the scripts' docstrings run them.

``./setup.sh`` installs the dependencies, not the package, so a script that imports ``llmseg`` or
``eval`` without putting the checkout on its path fails before it parses its arguments.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda path: path.name)
def test_benchmark_shows_its_help_from_any_folder(script: Path, tmp_path: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
