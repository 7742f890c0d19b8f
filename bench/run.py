"""Load harness for ratelimitd: `.venv/bin/python bench/run.py --help` (see bench/README.md).

Starts its own redis-server, ratelimitd and constant-answer servers on free ports, drives them
with h2load (and, with --e2e, Envoy with wrk), prints one table and appends it to
bench/RESULTS.md. Every process it starts is stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (bench/run.py): make `bench` importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
