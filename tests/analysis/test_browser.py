from __future__ import annotations

from pathlib import Path

import pytest

from analysis.browser import check_layout, find_browser, main


def test_layout_check_finds_what_sticks_out_and_what_scrolls(tmp_path: Path):
    if find_browser() is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    page = tmp_path / "index.html"
    page.write_text(
        "<html><head></head><body><p id='wide' style='width:2000px'>wide</p>"
        "<div class='scroll' style='overflow-x:auto'><table><caption>big</caption>"
        "<tr><td style='min-width:3000px'>scrolled</td></tr></table></div>"
        "<div class='scroll' style='overflow-x:auto'><table><tr><th>small</th></tr></table></div></body></html>"
    )
    layout = check_layout(page, width=800)
    assert not layout.fits and layout.page_width >= 2000
    assert len(layout.too_wide) == 1 and layout.too_wide[0].startswith("p#wide")  # the table scrolls: allowed
    assert layout.scrolled == ["big"]
    page.write_text(page.read_text().replace("width:2000px", "width:100px"))
    assert check_layout(page, width=800).fits


def test_without_chromium_the_script_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on the path
    page = tmp_path / "index.html"
    page.write_text("<html><head></head><body></body></html>")
    assert main([str(page)]) == 2
    assert "apt-get install chromium" in capsys.readouterr().err
