"""report.html: one self-contained page of the tables and plots, escaped, and rendered by a real browser."""

from __future__ import annotations

import base64
import glob
import html
import html.parser
import re
import shutil
import subprocess

import pytest

from tests.test_analysis import tidy

SCRIPT = "<script>alert(1)</script>"


class Elements(html.parser.HTMLParser):
    """The tags of a page (name and attributes, in order), as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(page)
    return parser.tags


def test_a_cell_title_or_note_from_the_files_is_text_never_markup():
    from study.analysis.report import Table, report_html
    from study.analysis.summary import display_per_variant, fmt
    from study.analysis.tables import per_variant

    frame = tidy([(SCRIPT, 0, [0.1, 0.2]), ("b", 0, [0.2, 0.3])], epochs=2, experiment='<img src=x onerror="1">')
    shown = display_per_variant(per_variant(frame)).map(fmt)
    png = b"\x89PNG\r\n\x1a\n not a real image"
    page = report_html(
        [str(frame["experiment"].iloc[0])],
        [f"environment of {SCRIPT}: torch"],
        "/tmp/<b>out</b>",
        [Table(f"title {SCRIPT}", shown, (f"note {SCRIPT}",)), Table("empty", shown.head(0), (), "(none)")],
        [(f"curves_{SCRIPT}.png", png)],
    )
    tags = parse(page)
    names = [tag for tag, _ in tags]
    assert "script" not in names and "b" not in names  # every one of them came out as text
    assert names.count("table") == 1 and names.count("img") == 1
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5  # cell, title, note, environment, file name
    (img,) = [attrs for tag, attrs in tags if tag == "img"]
    assert set(img) == {"src", "alt"}  # the experiment's onerror stayed inside the text
    assert img["src"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert "(none)" in page  # an empty table says what it means
    # Nothing is fetched: no URL but data: ones, and a policy that forbids any other.
    links = [value for _, attrs in tags for key, value in attrs.items() if key in ("src", "href", "srcset")]
    assert links and all(link.startswith("data:") for link in links)
    assert "default-src 'none'" in page


SEARCH = """
name: s
dataset: digits
num_samples: 3
search: {type: optuna, seed: 0, max_concurrent: 2}
scheduler: {type: asha, max_t: 2, grace_period: 1, reduction_factor: 2}
space:
  model: cnn
  channels: 4
  fc_width: 16
  epochs: 2
  batch_size: 128
  num_train: 200
  lr: {loguniform: [0.001, 0.03]}
"""

# Put into a copy of the page, first thing in <head>: it records every blocked fetch and failed
# load, then, once the page has loaded, writes what the browser rendered into the DOM as JSON.
PROBE = """<script>
const problems = [];
document.addEventListener("securitypolicyviolation", e => problems.push("blocked " + e.blockedURI));
window.addEventListener("error", e => problems.push("error " + (e.message || e.target.outerHTML.slice(0, 80))), true);
window.addEventListener("load", () => {
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    tables: document.querySelectorAll("table").length,
    rows: [...document.querySelectorAll("table")].map(t => t.rows.length),
    images: [...document.images].map(i => ({data: i.src.startsWith("data:image/png;base64,"), complete: i.complete,
      width: i.naturalWidth, shown: i.getBoundingClientRect().width})),
    problems,
    page_width: document.documentElement.scrollWidth,
    window_width: window.innerWidth,
  });
  document.body.appendChild(probe);
});
</script>"""


def probe(page: str, path, *args: str) -> dict:
    """What Chromium renders of `page` (written to `path` with the probe; the page's own policy
    allows no script, the copy allows the probe's)."""
    import json

    page = page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';")
    path.write_text(page.replace("<head>", "<head>\n" + PROBE, 1))
    dom = chromium("--virtual-time-budget=5000", *args, "--dump-dom", path.as_uri()).stdout
    return json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))


def chromium(*args: str) -> subprocess.CompletedProcess:
    command = [shutil.which("chromium"), "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr"]
    return subprocess.run([*command, "--v=0", *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.slow
def test_the_report_renders_every_table_and_plot_in_headless_chromium(ray_session, run_cli, write_yaml, tmp_path):
    from PIL import Image

    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    code, out, err = run_cli("run", write_yaml(SEARCH), "--storage-path", str(tmp_path), "--name", "s")
    assert code == 0, err
    analysis = tmp_path / "s" / "analysis"
    report = analysis / "report.html"
    assert f"report (one page, tables and plots): {report}" in out
    pngs = sorted(glob.glob(str(analysis / "*.png")))
    assert len(pngs) == 3  # learning curves, slice, parallel coordinates
    # A table in the report for each Markdown file that holds one, with as many rows.
    markdown_rows = [
        sum(line.startswith("|") for line in open(path).read().splitlines()) - 1  # less the |---| line
        for path in sorted(glob.glob(str(analysis / "*.md")))
    ]
    tables = [rows for rows in markdown_rows if rows > 0]

    # The page as written: it renders, logs nothing to the console, and its screenshot is not blank.
    shot = tmp_path / "report.png"
    run = chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--virtual-time-budget=5000", report.as_uri())
    assert "CONSOLE" not in run.stderr, run.stderr
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2000)
    dark = sum(image.histogram()[:200])  # pixels of text, rules and plots
    assert dark > 0.01 * image.size[0] * image.size[1]

    page = report.read_text()
    assert "<script" not in page
    found = probe(page, tmp_path / "probed.html")
    assert found["problems"] == []
    assert found["tables"] == len(tables) and sorted(found["rows"]) == sorted(tables)
    assert len(found["images"]) == len(pngs)
    for img in found["images"]:
        assert img["data"] and img["complete"] and img["width"] > 0 and img["shown"] > 0
    # Printed: with the print rules applied, nothing is wider than an A4 page (about 700 px inside
    # its margins at 96 dpi): wide tables wrap and plots shrink instead of being cut at the edge.
    printed = probe(page.replace("@media print", "@media all"), tmp_path / "printed.html", "--window-size=700,1000")
    assert printed["problems"] == [] and printed["page_width"] <= printed["window_width"] == 700
    pdf = tmp_path / "report.pdf"
    chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", report.as_uri())
    assert pdf.read_bytes().startswith(b"%PDF") and re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes())
    # Each embedded image is the PNG the analysis wrote.
    sources = [attrs["src"] for tag, attrs in parse(report.read_text()) if tag == "img"]
    written = sorted(base64.b64encode(open(path, "rb").read()).decode() for path in pngs)
    assert sorted(src.split(",", 1)[1] for src in sources) == written
