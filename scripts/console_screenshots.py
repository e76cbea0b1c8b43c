"""Screenshots of the console's pages for docs/console.md (docs/console/*.png).

Starts what the console's browser tests start (tests/console/stack.py: the four
services with mutual TLS and tokens on loopback, a use case with decisions, outcomes,
a deployed model and an effect report), then the console, sends decisions for about a
minute while the live page is polled, and has Debian's Chromium (through Playwright)
take a picture of every page::

    .venv/bin/python scripts/console_screenshots.py --out docs/console

Needs ``apt-get install chromium``. Everything runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.console.stack import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    OTHER,
    USE_CASE,
    Loop,
    running_console,
    running_loop,
)

TRAFFIC_S = 70.0


def traffic(loop: Loop, stop: threading.Event) -> None:
    """Decisions of the model and their purchases, a batch every second, until ``stop``."""
    from tests.console.stack import _log

    with loop.client() as client:
        version = client.get_use_case(USE_CASE).version
        rows = 40
        while not stop.is_set():
            _log(client, loop.world, version, rows)
            rows = 20 + (rows * 7) % 60  # an uneven rate, so the chart moves
            stop.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    parser.add_argument("--traffic-seconds", type=float, default=TRAFFIC_S)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp:
        root = Path(tmp)
        (root / "console").mkdir()
        with running_loop(root / "loop") as loop, running_console(loop, root / "console") as console, \
                sync_playwright() as playwright:
            base = console.url

            def browser(name: str):
                context = playwright.chromium.launch_persistent_context(
                    str(root / f"profile-{name}"), executable_path=CHROMIUM, headless=True,
                    args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 800})
                return context, (context.pages[0] if context.pages else context.new_page())

            def shot(page, name: str, path: str | None = None, full: bool = True) -> None:
                if path is not None:
                    page.goto(base + path)
                page.wait_for_load_state("load")
                page.screenshot(path=str(args.out / f"{name}.png"), full_page=full)
                print(f"{name}.png  {page.url}")

            context, page = browser("ada")
            page.goto(f"{base}/login")
            page.fill("input[name=name]", "Ada")
            shot(page, "login", full=False)
            page.fill("input[name=token]", loop.tokens.secrets["admin"])
            page.click("form[action='/login'] button[type=submit]")
            page.wait_for_url(f"{base}/use-cases")

            # A minute of traffic while the live page is watched: the console polls GetStats.
            stop = threading.Event()
            sender = threading.Thread(target=traffic, args=(loop, stop), daemon=True)
            page.goto(f"{base}/use-cases/{USE_CASE}/live?auto=0")
            sender.start()
            deadline = time.monotonic() + args.traffic_seconds
            while time.monotonic() < deadline:
                time.sleep(5)
                page.goto(f"{base}/use-cases/{USE_CASE}/live?auto=0")
            stop.set()
            sender.join()
            time.sleep(6)
            shot(page, "live", f"/use-cases/{USE_CASE}/live?auto=0")

            shot(page, "use-cases", "/use-cases")
            shot(page, "use-case", f"/use-cases/{USE_CASE}")
            shot(page, "diff", f"/use-cases/{USE_CASE}/diff?from=1&to=2")
            shot(page, "models", f"/use-cases/{USE_CASE}/models")
            shot(page, "decision", f"/use-cases/{USE_CASE}/decisions?id={loop.decision_id}")
            shot(page, "reports", "/reports")
            shot(page, "report", f"/use-cases/{USE_CASE}/reports/{loop.report_id}", full=False)
            shot(page, "operations", "/operations")
            shot(page, "operation", f"/use-cases/{USE_CASE}/operations/trainer/{loop.training_id}")

            # The kill switch, switched on from the console (then off again).
            page.goto(f"{base}/use-cases/{USE_CASE}")
            form = page.locator("form[data-form='kill-switch']")
            form.locator("input[name=reason]").fill("checkout incident: offers off")
            form.locator("button").click()
            page.wait_for_url(f"{base}/use-cases/{USE_CASE}")
            shot(page, "kill-switch", full=False)
            form = page.locator("form[data-form='kill-switch']")
            form.locator("input[name=reason]").fill("incident over")
            form.locator("button").click()
            page.wait_for_url(f"{base}/use-cases/{USE_CASE}")

            # Another team's token: its own use case only; this one is refused.
            other, page = browser("bob")
            page.goto(f"{base}/login")
            page.fill("input[name=token]", loop.tokens.secrets["other-team"])
            page.fill("input[name=name]", "Bob")
            page.fill("input[name=use_cases]", f"{OTHER} {USE_CASE}")
            page.click("form[action='/login'] button[type=submit]")
            page.wait_for_url(f"{base}/use-cases")
            shot(page, "scoped-use-cases", full=False)
            shot(page, "refused", f"/use-cases/{USE_CASE}/models", full=False)
            other.close()
            context.close()


if __name__ == "__main__":
    main()
