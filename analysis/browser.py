"""Check how a report renders: headless Chromium lays out ``index.html`` at a window width and lists
every element that sticks out of the window other than inside a horizontal scroller.

    python -m analysis.browser runs/demo/report/index.html [--width 1400]

Exit status 0 when nothing sticks out, 1 when something does, 2 when no Chromium is installed
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Runs after every image has loaded: an element is "too wide" when its right edge passes the
# window and no ancestor that scrolls horizontally (overflow-x auto/scroll) stays inside it.
_PROBE = """<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const scrolls = (el) => ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 1) continue;
    let parent = el.parentElement, contained = false;
    while (parent && parent !== document.body) {
      if (scrolls(parent) && parent.getBoundingClientRect().right <= width + 1) { contained = true; break; }
      parent = parent.parentElement;
    }
    if (!contained) wide.push(`${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}` +
      `${el.className ? "." + String(el.className).replace(/ /g, ".") : ""} right=${Math.round(box.right)}`);
  }
  const scrolled = [];  // scrollers whose content is wider than they are, named by their table's caption
  for (const el of document.body.querySelectorAll(".scroll")) {
    if (el.scrollWidth > el.clientWidth + 1) {
      const caption = el.querySelector("caption");
      scrolled.push(caption ? caption.textContent : el.querySelector("th").textContent);
    }
  }
  const out = document.createElement("pre");
  out.id = "layout-probe";
  out.textContent = JSON.stringify({width, page_width: document.documentElement.scrollWidth, wide, scrolled});
  document.body.appendChild(out);
});
</script>"""


@dataclass(frozen=True)
class Layout:
    width: int  # the window's content width in CSS pixels
    page_width: int  # the document's scroll width: > width means the page scrolls sideways
    too_wide: list[str]  # elements past the window outside a horizontal scroller
    scrolled: list[str]  # tables (caption, else first header) wider than their scroller: they scroll

    @property
    def fits(self) -> bool:
        return self.page_width <= self.width and not self.too_wide


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def check_layout(index: str | Path, *, width: int = 1400, height: int = 900, timeout: float = 120) -> Layout:
    """Lay out ``index`` in headless Chromium at ``width`` x ``height``. Raises FileNotFoundError
    when no Chromium is installed and RuntimeError when it gives no layout."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found (Debian: apt-get install chromium)")
    index = Path(index).resolve()
    page = index.read_text(encoding="utf-8")
    base = f'<base href="{index.parent.as_uri()}/">'
    probed = page.replace("<head>", "<head>" + base, 1).replace("</body>", _PROBE + "</body>", 1)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "index.html"
        copy.write_text(probed, encoding="utf-8")
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--window-size={width},{height}", "--virtual-time-budget=15000", "--allow-file-access-from-files",
            "--dump-dom", copy.as_uri(),
        ]  # fmt: skip
        dom = subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout
    match = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.DOTALL)
    if match is None:
        raise RuntimeError(f"Chromium gave no layout for {index}")
    data = json.loads(html.unescape(match.group(1)))
    return Layout(int(data["width"]), int(data["page_width"]), list(data["wide"]), list(data["scrolled"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args(argv)
    try:
        layout = check_layout(args.index, width=args.width)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"window {layout.width} px, page {layout.page_width} px, {len(layout.too_wide)} element(s) too wide")
    for element in layout.too_wide:
        print(f"  {element}")
    for table in layout.scrolled:
        print(f"  scrolls sideways (allowed): table {table!r}")
    return 0 if layout.fits else 1


if __name__ == "__main__":
    sys.exit(main())
