"""Load harness for ratelimitd: `.venv/bin/python bench/run.py --help` (see bench/README.md)."""
