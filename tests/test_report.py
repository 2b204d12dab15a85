"""`snakemake --report`: one HTML report with every table and figure, captioned, rendered in
headless Chromium (Debian's package), driven over the DevTools protocol on a pipe."""

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CI_CONFIG, REPO, snakemake

pytestmark = pytest.mark.workflow

DCUBE_TABLES = ("main", "imbalance", "limited", "blocks", "synthetic_quality", "block_selection")

# The report is read at this window width (a laptop screen); wide tables must fit it.
VIEWPORT = {"width": 1400, "height": 900}

# Runs inside the report page: shows every result the way a click in the report does and
# reports, per result, whether the figure decoded (its pixel size) or the table is there and
# fits the frame the report shows it in (the table page laid out again, same-origin, at the
# frame's width: its content must not be wider than the frame).
SHOW_EVERY_RESULT = """
(async () => {
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  for (let i = 0; i < 100 && typeof app === "undefined"; i++) await wait(100);
  const shown = [];
  for (const [path, entry] of Object.entries(results)) {
    const record = {path, mime: entry.mime_type, caption: entry.caption.replace(/<[^>]+>/g, " ")};
    if (entry.mime_type.startsWith("image/")) {
      app.setView({content: "img", contentPath: entry.data_uri, resultPath: path});
      let img;
      for (let i = 0; i < 50 && !img; i++) {
        await wait(100);
        img = [...document.querySelectorAll("#app img")].find((x) => x.getAttribute("src") === entry.data_uri);
      }
      if (img) {
        await img.decode().catch(() => {});
        record.width = img.naturalWidth;
        record.height = img.naturalHeight;
      }
    } else if (entry.mime_type === "text/html") {
      app.setView({content: "html", contentPath: entry.data_uri, resultPath: path});
      let frame;
      for (let i = 0; i < 50 && !frame; i++) {
        await wait(100);
        frame = [...document.querySelectorAll("#app iframe")].find((x) => x.getAttribute("src") === entry.data_uri);
      }
      record.framed = Boolean(frame);
      const html = await (await fetch(entry.data_uri)).text();
      record.table = html.includes("<table");
      record.marked = html.includes("[generated stand-in data, not the real dataset]");
      if (frame) {
        const probe = document.createElement("iframe");
        probe.style.width = frame.clientWidth + "px";
        probe.style.height = "600px";
        probe.srcdoc = html;
        const loaded = new Promise((resolve) => (probe.onload = resolve));
        document.body.appendChild(probe);
        await loaded;
        record.frame_width = probe.contentDocument.documentElement.clientWidth;
        record.content_width = probe.contentDocument.documentElement.scrollWidth;
        record.table_width = probe.contentDocument.querySelector("table")?.getBoundingClientRect().width ?? 0;
        probe.remove();
      }
    }
    shown.push(record);
  }
  return {categories: Object.keys(categories), results: shown};
})()
"""

# Shows one figure as a click in the report does; resolves when it has decoded.
SHOW_FIGURE = """
(async () => {
  const entry = results[%s];
  app.setView({content: "img", contentPath: entry.data_uri, resultPath: %s});
  for (let i = 0; i < 50; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const img = [...document.querySelectorAll("#app img")].find((x) => x.getAttribute("src") === entry.data_uri);
    if (img) { await img.decode().catch(() => {}); return true; }
  }
  return false;
})()
"""


class HeadlessChromium:
    """Chromium with the DevTools protocol on file descriptors 3 (in) and 4 (out)."""

    def __init__(self, profile_dir: Path, timeout: float = 60):
        self.timeout, self.next_id, self.buffer = timeout, 0, b""
        command_read, self.command_write = os.pipe()
        self.reply_read, reply_write = os.pipe()

        def wire_pipes():
            os.dup2(command_read, 3)
            os.dup2(reply_write, 4)

        self.process = subprocess.Popen(
            [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"]
            + [f"--user-data-dir={profile_dir}", "about:blank"],
            preexec_fn=wire_pipes,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(command_read)
        os.close(reply_write)

    def close(self):
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self.command_write)
        os.close(self.reply_read)

    def message(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.reply_read], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self.reply_read, 1 << 20)
            assert chunk, "Chromium closed the DevTools pipe"
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = session
        os.write(self.command_write, json.dumps(request).encode() + b"\0")
        while (reply := self.message()).get("id") != self.next_id:
            pass
        assert "error" not in reply, reply
        return reply["result"]

    def wait_for(self, event: str) -> None:
        while self.message().get("method") != event:
            pass

    def open(self, url: str) -> str:
        """A new page at ``url`` in a window of VIEWPORT's size; returns its session."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session)
        self.call("Emulation.setDeviceMetricsOverride", session, deviceScaleFactor=1, mobile=False, **VIEWPORT)
        self.call("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired")
        return session

    def evaluate(self, session: str, expression: str):
        reply = self.call("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in reply, reply
        return reply["result"]["value"]

    def screenshot(self, session: str, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", session, format="png")["data"]))


@pytest.fixture(scope="module")
def chromium():
    if shutil.which("chromium") is None:
        if os.geteuid() != 0:
            pytest.skip("Chromium is not installed and installing it needs root")
        subprocess.run(["bash", str(REPO / "tests" / "tools" / "ensure_packages.sh"), "chromium"], check=True)


def test_report_shows_every_table_and_figure_with_captions_in_chromium(chromium, ci_run, tmp_path):
    """Every paper's tables and figures are in the report, each with its own caption; tables
    fit a 1,400 px window; a screenshot of each figure as the report shows it is kept in the
    test's folder for a look."""
    from PIL import Image

    report = tmp_path / "report.html"
    snakemake(["--report", str(report), "--directory", str(ci_run), "--configfile", *CI_CONFIG], ci_run)
    browser = HeadlessChromium(tmp_path / "chromium-profile")
    screenshots = tmp_path / "screenshots"
    screenshots.mkdir()
    try:
        session = browser.open(report.as_uri())
        page = browser.evaluate(session, SHOW_EVERY_RESULT)
        for result in page["results"]:
            if result["mime"].startswith("image/"):
                path = json.dumps(result["path"])
                assert browser.evaluate(session, SHOW_FIGURE % (path, path)), result["path"]
                name = result["path"].split("results/", 1)[-1].replace("/", "_")
                browser.screenshot(session, screenshots / name)
    finally:
        browser.close()

    assert {"DiffBoost", "DiffMix", "D-Cube"} <= set(page["categories"])
    # Keyed by the path under results/ (both papers have a samples.png).
    shown = {Path(result["path"]).as_posix().split("results/", 1)[-1]: result for result in page["results"]}
    paper_tables = ("main", "ratio", "patch", "alpha", "architecture", "augmentation")
    tables = {f"diffboost/tables/{name}.html" for name in (*paper_tables, "generator_quality", "by_class")}
    tables |= {f"diffmix/tables/{name}.html" for name in ("label_maps", "synthesis", "hovernet")}
    tables |= {f"dcube/tables/{name}.html" for name in DCUBE_TABLES}
    figures = {"diffboost/figures/dice_vs_ratio.png", "diffboost/figures/samples.png"}
    figures |= {f"diffmix/figures/{name}.png" for name in ("f1_per_class", "rare_f1_vs_ratio", "samples")}
    figures |= {f"dcube/figures/{name}.png" for name in ("metric_vs_synthetic", "metric_vs_imbalance", "samples")}
    assert shown.keys() == tables | figures
    captions = {}
    for name, result in shown.items():
        caption = " ".join(result["caption"].split())
        captions[name] = caption
        assert "Scale:" in caption and "Data:" in caption and "generated stand-in" in caption, name
        if name.endswith(".png"):
            assert result["width"] > 100 and result["height"] > 100, result
            assert "Protocol" in caption or "fold 0" in caption, name
            # The caption is this figure's: it names no other figure of its paper (the names
            # with an underscore; "samples" is also a plain word).
            paper = name.partition("/figures/")[0]
            others = {f.split("/")[-1][:-4] for f in figures if f.startswith(paper) and f != name}
            assert not any(re.search(rf"\b{other}\b", caption) for other in others if "_" in other), (name, caption)
            continue
        assert result["framed"] and result["table"], name
        assert result["marked"], name  # the table's own title says the data are stand-ins
        assert result["content_width"] <= result["frame_width"], (name, result)
        if name.startswith("diffmix/tables/"):
            assert "GradMix" in caption and "training tiles only" in caption and "HoVer-Net" in caption, name
        elif name.endswith("generator_quality.html"):
            assert "follow its condition" in caption and "Not in the paper" in caption, name
        elif name.endswith("by_class.html"):
            assert "per image class" in caption and "Protocols:" in caption and "Not in" in caption, name
        elif name.startswith("dcube/tables/"):
            assert "Protocols:" in caption, name
        else:
            assert "Protocols:" in caption, name
            # The CI config runs no ablation: those tables say they hold the main setting only.
            if name.split("/")[-1][:-5] in ("patch", "alpha", "architecture", "augmentation"):
                assert "not yet the paper's" in caption, name
            else:
                assert "Reproduces the paper" in caption, name
    # One caption per figure: no two figures of a paper share theirs.
    figure_captions = [captions[name] for name in figures]
    assert len(set(figure_captions)) == len(figure_captions)
    assert sorted(p.name for p in screenshots.iterdir()) == sorted(f.replace("/", "_") for f in figures)
    for shot in screenshots.iterdir():
        with Image.open(shot) as image:
            assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
