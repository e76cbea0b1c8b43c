"""Check the house rules on imports (the import-linter contracts in pyproject.toml).

The installed package ``loopwise`` comes from two folders (setup.py maps
``lib/loopwise`` to ``loopwise`` and ``services`` to ``loopwise.services``), but
import-linter reads one package folder. So this script lays the package out as it
is installed, in a temporary folder of links to the source files, and runs
``lint-imports`` (from the same environment) on it::

    python scripts/lint_imports.py            # exit 0 when every contract is kept

:func:`package_view` is also what tests/lib/test_import_contract.py uses to show
that a deliberately added import breaks a contract.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where each part of the installed package comes from (setup.py's package_dir).
SOURCES = {"loopwise": ROOT / "lib" / "loopwise", "loopwise/services": ROOT / "services"}


def package_view(dest: Path, extra: Mapping[str, str] | None = None) -> Path:
    """Lay ``loopwise`` out under ``dest`` as installed: a folder per package, a link
    per Python file. ``extra`` adds files (path under ``dest`` -> source text), e.g. a
    module with a forbidden import. Returns ``dest`` (the folder to put on the path)."""
    for target, source in SOURCES.items():
        for folder, dirs, files in os.walk(source):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            rel = Path(folder).relative_to(source)
            out = dest / target / rel
            out.mkdir(parents=True, exist_ok=True)
            for name in files:
                if name.endswith((".py", ".pyi")):
                    (out / name).symlink_to(Path(folder) / name)
    for path, text in (extra or {}).items():
        file = dest / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if file.is_symlink():
            file.unlink()
        file.write_text(text)
    return dest


def lint_imports(view: Path, config: Path = ROOT / "pyproject.toml") -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` with ``config`` on the package laid out in ``view``."""
    command = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(view)}
    return subprocess.run([str(command), "--config", str(config), "--no-cache"], cwd=view,
                          env=env, capture_output=True, text=True, check=False)


def main() -> int:
    """Lay the package out, run the contracts, print import-linter's report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loopwise-imports-") as tmp:
        result = lint_imports(package_view(Path(tmp)))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
