"""The checked-in generated protobuf code matches a fresh run of scripts/gen_protos.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

GENERATED = Path("ratelimitd") / "protos"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_protos.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / GENERATED).rglob("*.py*")}
    current = {
        p.relative_to(REPO): p.read_bytes()
        for p in (REPO / GENERATED).rglob("*.py*")
        if "__pycache__" not in p.parts
    }
    assert sorted(fresh) == sorted(current), "files differ: run `make protos`"
    stale = [str(path) for path, content in fresh.items() if current[path] != content]
    assert not stale, f"stale generated code (run `make protos`): {stale}"
