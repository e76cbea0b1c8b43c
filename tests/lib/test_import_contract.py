"""The house rules on imports (import-linter contracts in pyproject.toml): the services
never import each other, the library never imports a service, the decision service
never imports scikit-learn, skl2onnx, EconML or pandas. The contracts are kept by the
code as it is, and broken by an import added against each of them."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lint_imports.py"
CONTRACTS = ("The services never import each other",
             "The library (lib/loopwise) never imports a service",
             "The decision service's hot path stays lean")


def _script():
    spec = importlib.util.spec_from_file_location("lint_imports", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _verdicts(report: str) -> dict[str, str]:
    """Contract name -> KEPT or BROKEN, from the summary of a report (names may wrap)."""
    summary = " ".join(report.split("Contracts:", 1)[0].split())
    found = {}
    for name in CONTRACTS:
        match = re.search(re.escape(name) + r".*? (KEPT|BROKEN)\b", summary)
        assert match is not None, (name, summary)
        found[name] = match.group(1)
    return found


def test_the_code_keeps_every_import_contract() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=240,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout
    assert _verdicts(result.stdout) == dict.fromkeys(CONTRACTS, "KEPT")


def test_an_import_against_each_rule_breaks_its_contract(tmp_path: Path) -> None:
    lint = _script()
    view = lint.package_view(tmp_path, {
        # The evaluator reaching into the decision service.
        "loopwise/services/evaluator/breach.py": "from loopwise.services.decision.policy import Policy\n",
        # A library module reaching into a service.
        "loopwise/breach.py": "from loopwise.services.feedback import spool\n",
        # The decision service pulling in pandas (inside a function counts too).
        "loopwise/services/decision/breach.py": "def frame():\n    import pandas\n\n    return pandas\n",
    })
    result = lint.lint_imports(view)
    report = result.stdout
    assert result.returncode == 1, report + result.stderr
    assert "Contracts: 0 kept, 3 broken." in report
    assert _verdicts(report) == dict.fromkeys(CONTRACTS, "BROKEN")
    assert "loopwise.services.evaluator.breach -> loopwise.services.decision.policy (l.1)" in report
    assert "loopwise.breach -> loopwise.services.feedback.spool (l.1)" in report
    assert "loopwise.services.decision.breach -> pandas (l.2)" in report
