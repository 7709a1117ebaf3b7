"""docs/campaigns.md: every command of its three-night walk-through runs, in order, in a fresh folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DOC = REPO / "docs" / "campaigns.md"


def walkthrough_blocks() -> str:
    """The ```bash blocks of the walk-through section, joined."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, re.S))


@pytest.mark.slow
def test_the_walkthrough_commands_run(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')   # a link would lose the venv
    (bin_dir / "python").chmod(0o755)
    scripts = Path(sys.executable).parent
    if not (scripts / "crop-cluster").exists():
        pytest.skip("the crop-cluster console script is not installed beside this Python")
    (tmp_path / "example").symlink_to(REPO / "example")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{scripts}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough_blocks()], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "walk" / "trapA" / "campaign.sqlite").is_file()
