"""Fixtures of the console's browser tests: the loop and the console of
:mod:`tests.console.stack`, and Debian's Chromium driven by Playwright, each user in a
browser of their own with a fresh user data directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.stack import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleProcess,
    Loop,
    running_console,
    running_loop,
)


def chromium() -> str:
    """Debian's Chromium; skipped locally (failed in CI) when it is missing."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs chromium for the console's browser tests (apt-get install chromium)")
    pytest.skip("no chromium on this machine: apt-get install chromium")


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    chromium()  # skip before starting anything when there is no browser
    with running_loop(tmp_path_factory.mktemp("console_loop")) as made:
        yield made


@pytest.fixture(scope="module")
def console(loop: Loop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProcess]:
    with running_console(loop, tmp_path_factory.mktemp("console")) as started:
        yield started


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Any]:
    chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def open_browser(playwright_instance: Any, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Callable[[], Any]]:
    """Opens Chromium with a fresh user data directory (one per user); all closed at the end."""
    contexts: list[tuple[Any, Path]] = []

    def open_context() -> Any:
        profile = tmp_path_factory.mktemp("chromium-profile")
        context = playwright_instance.chromium.launch_persistent_context(
            str(profile), executable_path=chromium(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900})
        context.set_default_timeout(20_000)
        contexts.append((context, profile))
        return context

    yield open_context
    for context, profile in contexts:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)
