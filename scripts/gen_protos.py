"""Generate the Python stubs of protos/ into a directory (default: lib/).

Used by ``make proto`` and by the test that fails when committed stubs drift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path) -> list[Path]:
    """Run protoc on every .proto under protos/, writing *_pb2.py, .pyi, *_grpc.py to ``out``."""
    files = sorted(PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *map(str, files),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "lib")
    ns = parser.parse_args()
    files = generate(ns.out)
    print(f"generated stubs for {len(files)} proto files into {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
