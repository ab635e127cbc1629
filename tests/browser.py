"""Open a self-contained HTML page in Debian's chromium (the compare report, the monitor page).

One helper for the tests that check a page as a reader's browser shows it: nothing loaded from
the network, no console or page error, and what the page's scripts say about it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def open_in_chromium(path: Path, queries: dict[str, str]) -> tuple[list[str], dict]:
    """``(problems, answers)``: the console errors, page errors and failed requests while ``path``
    loads, and each of ``queries`` (name -> JavaScript expression) evaluated on the loaded page.

    Skips (with the reason) when chromium or playwright is missing; fails when the page's HTML
    points at anything on the network.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium): the page was not opened")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must not load anything"
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            answers = {name: page.evaluate(script) for name, script in queries.items()}
        finally:
            browser.close()
    return problems, answers


IMAGES = "Array.from(document.images).map(i => ({id: i.id, ok: i.complete && i.naturalWidth > 0}))"
OPENING = "document.querySelector('h1').nextElementSibling.id"
VERDICT = "Array.from(document.querySelectorAll('#plain-verdict p')).map(p => p.innerText)"
