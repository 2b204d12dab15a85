"""`snakemake --report`: one HTML report with every table and figure, captioned, rendered in
headless Chromium (Debian's package), driven over the DevTools protocol on a pipe."""

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CI_CONFIG, REPO, snakemake

pytestmark = pytest.mark.workflow

# Runs inside the report page: shows every result the way a click in the report does and
# reports, per result, whether the figure decoded (its pixel size) or the table is there.
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
      await wait(300);
      const frames = [...document.querySelectorAll("#app iframe")];
      record.framed = frames.some((x) => x.getAttribute("src") === entry.data_uri);
      record.table = (await (await fetch(entry.data_uri)).text()).includes("<table");
    }
    shown.push(record);
  }
  return {categories: Object.keys(categories), results: shown};
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

    def evaluate_in(self, url: str, expression: str):
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session)
        self.call("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired")
        reply = self.call("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in reply, reply
        return reply["result"]["value"]


@pytest.fixture(scope="module")
def chromium():
    if shutil.which("chromium") is None:
        if os.geteuid() != 0:
            pytest.skip("Chromium is not installed and installing it needs root")
        subprocess.run(["bash", str(REPO / "tests" / "tools" / "ensure_packages.sh"), "chromium"], check=True)


def test_report_shows_every_table_and_figure_with_captions_in_chromium(chromium, ci_run, tmp_path):
    report = tmp_path / "report.html"
    snakemake(["--report", str(report), "--directory", str(ci_run), "--configfile", *CI_CONFIG], ci_run)
    browser = HeadlessChromium(tmp_path / "chromium-profile")
    try:
        page = browser.evaluate_in(report.as_uri(), SHOW_EVERY_RESULT)
    finally:
        browser.close()

    assert {"DiffBoost", "DiffMix", "D-Cube"} <= set(page["categories"])
    # Keyed by the path under results/ (both papers have a samples.png).
    shown = {Path(result["path"]).as_posix().split("results/", 1)[-1]: result for result in page["results"]}
    paper_tables = ("main", "ratio", "patch", "alpha", "architecture", "augmentation")
    tables = {f"diffboost/tables/{name}.html" for name in (*paper_tables, "generator_quality")}
    tables |= {f"diffmix/tables/{name}.html" for name in ("label_maps", "synthesis", "hovernet")}
    figures = {"diffboost/figures/dice_vs_ratio.png", "diffboost/figures/samples.png"}
    figures |= {f"diffmix/figures/{name}.png" for name in ("f1_per_class", "rare_f1_vs_ratio", "samples")}
    figures |= {f"dcube/figures/{name}.png" for name in ("metric_vs_synthetic", "metric_vs_imbalance", "samples")}
    assert shown.keys() == tables | figures
    for name, result in shown.items():
        caption = " ".join(result["caption"].split())
        assert "Scale:" in caption and "Data:" in caption and "generated stand-in" in caption, name
        if name.endswith(".png"):
            assert result["width"] > 100 and result["height"] > 100, result
            assert "Protocol" in caption or "fold 0" in caption, name
        elif name.startswith("diffmix/tables/"):
            assert result["framed"] and result["table"], name
            assert "GradMix" in caption and "training tiles only" in caption and "HoVer-Net" in caption, name
        elif name.endswith("generator_quality.html"):
            assert result["framed"] and result["table"], name
            assert "follow its condition" in caption and "Not in the paper" in caption, name
        else:
            assert result["framed"] and result["table"], name
            assert "Reproduces the paper" in caption and "Protocols:" in caption, name
