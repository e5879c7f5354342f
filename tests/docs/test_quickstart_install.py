"""The quickstart's install block works as written, in a fresh copy of the checkout.

The copy holds the files git tracks (as a clean clone would) and a new venv;
the block runs in one ``bash -euo pipefail``.  The installed ``tiendasync``
command must answer ``--help``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .test_docs import ROOT, blocks

PAGE = ROOT / "docs" / "quickstart.md"


@pytest.mark.slow
def test_the_install_block_installs_the_command(tmp_path: Path) -> None:
    install = next(b for b in blocks(PAGE) if b.label == "bash")
    assert "pip install -e ." in install.code
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    checkout = tmp_path / "tiendasync"
    for name in filter(None, (t.decode() for t in tracked)):
        source = ROOT / name
        if source.is_file():
            target = checkout / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", install.code],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: tiendasync" in result.stdout, result.stdout[-2000:]
    assert (checkout / ".venv" / "bin" / "tiendasync").is_file()
