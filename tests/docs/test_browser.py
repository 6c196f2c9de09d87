"""The built site renders in headless Chromium: no missing asset, no JavaScript error,
no empty page, nothing fetched from the network (the index, a tutorial, a reference
page and a page with diagrams)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.docs.browser import PageReport, find_chromium, load_pages

pytestmark = pytest.mark.timeout(900)

PAGES = (
    "index.html",
    "tutorials/getting-started.html",
    "reference/_api/cqrs_ddd_core.cqrs.mediator.html",
    "explanation/persistence-flow.html",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        reason = "Chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{reason}; CI is set: .ci/run must install it")
        pytest.skip(reason)
    return found


def local_assets(page: Path) -> list[str]:
    """The files a page references by src, href or data, other than pages and anchors."""
    found = []
    for reference in re.findall(r'(?:src|href|data)="([^"#]+)', page.read_text()):
        if urlsplit(reference).scheme or reference.startswith("//"):
            continue
        if not reference.endswith(".html"):
            found.append(unquote(reference.split("?", 1)[0]))
    return found


def describe(reports: list[PageReport]) -> str:
    return "\n".join(f"{r.url}: text {r.text_length}, errors {r.errors}" for r in reports)


def test_a_missing_asset_a_javascript_error_and_an_empty_page_are_reported(
    chromium: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<html><head><link rel="stylesheet" href="gone.css"></head><body><p>words</p>'
        '<img src="gone.png"><script>throw new Error("planted")</script>'
        '<img src="http://127.0.0.1:9/remote.png"></body></html>'
    )
    empty = tmp_path / "empty.html"
    empty.write_text("<html><head><style>p {}</style></head><body> </body></html>")
    fine = tmp_path / "fine.html"
    fine.write_text("<html><head><style>p {}</style></head><body><p>words</p></body></html>")

    broken_report, empty_report, fine_report = load_pages(chromium, [broken, empty, fine])

    assert any("gone.css" in e for e in broken_report.errors)
    assert any("gone.png" in e for e in broken_report.errors)
    assert any("planted" in e for e in broken_report.errors)
    assert any("fetched from the network: http://127.0.0.1:9/" in e for e in broken_report.errors)
    assert not empty_report.ok
    assert empty_report.text_length == 0
    assert fine_report.ok, fine_report.errors


def test_every_local_asset_the_pages_reference_is_in_the_site(site: Path) -> None:
    for name in PAGES:
        page = site / name
        assets = local_assets(page)
        assert assets, name  # the theme's CSS and scripts at least
        for asset in assets:
            assert (page.parent / asset).resolve().is_file(), f"{name} -> {asset}"


def test_the_pages_render_in_chromium_with_text_and_without_errors(
    chromium: str, site: Path
) -> None:
    reports = load_pages(chromium, [site / name for name in PAGES])

    assert all(report.ok for report in reports), describe(reports)
    assert all("cqrs-ddd-advanced-core" in report.title for report in reports)
