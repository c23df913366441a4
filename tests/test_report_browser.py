"""``report.html`` in a real headless Chromium: it loads with no console error, every
embedded image decodes, the change list has a row per change, and moving the swipe
slider changes what is shown on screen.

Chromium is driven from the command line: a small harness script put into the page's
``<head>`` records errors, sets the slider (value from the URL's ``#swipe=N``) as a user
would (``input`` event) and writes what it saw into the DOM (``--dump-dom``); two
screenshots with the slider at 5 and at 95 must differ inside the viewer. Skips where no
Chromium is installed (``apt-get install chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from fundusfeat.io.demo import load_demo_pair
from fundusfeat.io.report_html import VisitInfo, report_html
from fundusfeat.pipeline.changes import compare

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed"),
]

HARNESS = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push('error: ' + (e.message || (e.target && e.target.src || '').slice(0, 40)));
}, true);
(function () {
  var original = console.error;
  console.error = function () {
    window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    original.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  var slider = document.querySelector('input.swipe');
  var top = document.querySelector('.viewer img.top');
  var before = top ? getComputedStyle(top).clipPath : null;
  var m = /swipe=(\\d+)/.exec(location.hash);
  if (slider && m) {
    slider.value = m[1];
    slider.dispatchEvent(new Event('input', {bubbles: true}));
  }
  var imgs = Array.prototype.slice.call(document.images);
  var out = {
    errors: window.__errors,
    images: imgs.length,
    broken: imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length,
    slider: !!slider,
    before: before,
    after: top ? getComputedStyle(top).clipPath : null,
    confidence: (document.querySelector('b.confidence') || {}).textContent || null,
    listed: document.querySelectorAll('table.changes tr').length - 1,
    count: (document.querySelector('b.n-changes') || {}).textContent || null,
    viewer: (function () {
      var v = document.querySelector('.viewer');
      if (!v) { return null; }
      var r = v.getBoundingClientRect();
      return [r.left, r.top, r.width, r.height];
    })()
  };
  var pre = document.createElement('pre');
  pre.id = 'harness-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

WINDOW = (1200, 1400)


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=4000",
        *args,
    ]
    env = dict(os.environ, HOME=os.environ.get("HOME", "/tmp"))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    img1, img2, H = load_demo_pair()
    spot1 = np.array([[[img1.shape[1] * 0.4, img1.shape[0] * 0.55]]])
    spot2 = cv2.perspectiveTransform(spot1, H)[0, 0]
    follow = img2.copy()
    cv2.circle(follow, (int(spot2[0]), int(spot2[1])), 12, (10, 10, 40), -1, cv2.LINE_AA)
    res = compare(img1, follow)
    assert res.success, res.reason
    visits = [VisitInfo("visit 1", "a.jpg", "", None), VisitInfo("visit 2", "b.jpg", "", None)]
    html = report_html([res], visits)
    assert "<head>" in html
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html.replace("<head>", "<head>" + HARNESS, 1), encoding="utf-8")
    return path, res


def _state(path, swipe: int) -> dict:
    proc = _chromium("--dump-dom", f"{path.as_uri()}#swipe={swipe}")
    m = re.search(r"<pre id=\"harness-result\">(.*?)</pre>", proc.stdout, re.S)
    assert m, f"no harness result; stderr:\n{proc.stderr[-3000:]}"
    text = m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
    state = json.loads(text.replace("&gt;", ">"))
    # Chromium logs uncaught page errors and console messages as CONSOLE lines
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    state["console"] = console
    return state


def test_page_loads_without_errors_and_the_slider_moves_the_swipe(page):
    path, res = page
    state = _state(path, 10)
    assert state["errors"] == [] and state["console"] == [], state
    assert state["images"] >= 5 and state["broken"] == 0, state
    assert state["slider"], state
    assert state["confidence"] == f"{res.registration.confidence:.3f}"
    assert state["before"] != state["after"], state  # the clip moved with the slider
    assert "90%" in state["after"].replace(" ", ""), state
    # the change list lists the changes: one row each, the painted spot among them
    assert state["listed"] == len(res.changes) >= 1 and state["count"] == str(len(res.changes))


def test_moving_the_slider_changes_the_rendered_view(page, tmp_path):
    path, _ = page
    shots = []
    for swipe in (5, 95):
        png = tmp_path / f"swipe{swipe}.png"
        proc = _chromium(f"--screenshot={png}", f"{path.as_uri()}#swipe={swipe}")
        assert png.is_file(), proc.stderr[-3000:]
        shots.append(cv2.imread(str(png)))
    state = _state(path, 50)
    x, y, w, h = (int(round(v)) for v in state["viewer"])
    assert w > 50 and h > 50, state
    a, b = (s[y : y + h, x : x + w].astype(np.int16) for s in shots)  # clipped to the window
    assert a.shape == b.shape and a.size > 0
    changed = np.abs(a - b).max(axis=2) > 8
    assert changed.mean() > 0.01, changed.mean()  # the follow-up covers a different part
