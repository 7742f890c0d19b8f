"""Generate the Python protobuf and gRPC modules under ratelimitd/protos from proto/.

Usage: python scripts/gen_protos.py [OUTPUT_ROOT]   (default: the repository root)

tests/test_protos_fresh.py runs this into a temporary directory and compares the result with
the checked-in modules, so the generated code can never drift from the .proto sources.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PACKAGE = Path("ratelimitd") / "protos"
SERVICES = [
    "ratelimitd/protos/envoy/service/auth/v3/external_auth.proto",
    "ratelimitd/protos/envoy/service/ratelimit/v3/rls.proto",
    "ratelimitd/protos/envoy/service/rate_limit_quota/v3/rlqs.proto",
]


def generate(out_root: Path) -> list[Path]:
    """Write the generated modules below out_root and return the files written."""
    sources = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    include = [f"-I{PROTO_ROOT}", f"-I{well_known}"]
    out_root.mkdir(parents=True, exist_ok=True)
    runs = [
        [*include, f"--python_out={out_root}", f"--pyi_out={out_root}", *sources],
        [*include, f"--grpc_python_out={out_root}", *SERVICES],
    ]
    for args in runs:
        if protoc.main(["protoc", *args]) != 0:
            raise SystemExit(f"protoc failed: {' '.join(args)}")
    package_dir = out_root / PACKAGE
    for directory in [package_dir, *(d for d in package_dir.rglob("*") if d.is_dir())]:
        if directory.name != "__pycache__":
            (directory / "__init__.py").touch()
    return sorted(p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    for path in generate(root):
        print(path.relative_to(root))
