"""The gallery page, report/index.html: built by a real run (film, frames, training, samples, art) in a
folder whose name has spaces and non-ASCII letters, checked as HTML here and in a real headless Chromium
where Debian's chromium and chromium-driver are installed (.ci/run installs them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from cineml.testing import make_project, run_project
from cineml_plugins import gallery

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

MANIFEST = """
[project]
name = "Det perfekte menneske"
source = "footage/film.mp4"

[source]
use = "synthetic"
seconds = 2

[extract]
fps = 12

[[preprocess]]
use = "letterbox"
size = 16
grayscale = true

[train]
use = "stylegan2"
config = "tiny"
kimg = 0.06
snapshot_kimg = 0.02
batch = 4

[generate]
use = "stylegan2"
seeds = "0-5"

[[compose]]
use = "grid"
input = "generated"
output = "grid.png"

[[compose]]
use = "animation"
input = "fakes"
fps = 6
output = "fakes.mp4"
"""


class Links(HTMLParser):
    """Every src and href of the page, the snapshot list and the plots."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.polylines: list[int] = []
        self.script: str | None = None
        self._in_snapshots = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for key in ("src", "href"):
            if found.get(key):
                self.links.append(str(found[key]))
        if tag == "polyline":
            self.polylines.append(len(str(found["points"]).split()))
            assert int(str(found["data-points"])) == self.polylines[-1]
        self._in_snapshots = tag == "script" and found.get("id") == "snapshots"

    def handle_data(self, data: str) -> None:
        if self._in_snapshots:
            self.script = data
            self._in_snapshots = False


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = make_project(tmp_path_factory.mktemp("gallery") / "Det perfekte menneske ø", MANIFEST)
    record = run_project(manifest)
    assert record["status"] == "finished"
    return manifest.parent


def test_the_run_writes_a_page_whose_every_link_exists(project: Path) -> None:
    page = project / "report/index.html"
    links = parse(page)
    assert links.links and all((page.parent / unquote(link)).exists() for link in links.links), links.links
    shots = json.loads(links.script or "[]")
    assert [s["kimg"] for s in shots] == [0.0, 0.02, 0.04, 0.06]  # every snapshot, in order
    assert all((page.parent / unquote(s["full"])).name.startswith("fakes") for s in shots)
    stats = [json.loads(line) for line in (project / "train/stats.jsonl").read_text().splitlines()]
    plotted = gallery.series(stats)
    assert links.polylines == [len(points) for points in plotted.values()] and len(plotted) > 5  # a point a record
    assert links.polylines[0] == len(stats) == 3
    text = page.read_text(encoding="utf-8")
    for words in ("Det perfekte menneske", "24 at 12 fps", "shots", "grid.png", "<video",
                  "fakes.mp4", "never ran"):
        assert words in text, words


def test_a_cut_off_stats_line_and_no_training_still_make_a_page(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    stats = copy / "train/stats.jsonl"
    stats.write_text(stats.read_text()[:-40])  # killed while writing its last line
    project_obj = type("P", (), {"root": copy, "name": "copy", "manifest_path": copy / "project.toml",
                                 "source": None, "hook": None})()
    page = gallery.build(project_obj)
    assert max(parse(page).polylines) == 2  # the two whole lines
    shutil.rmtree(copy / "train")
    page = gallery.build(project_obj)
    assert "No training yet" in page.read_text() and all((page.parent / unquote(link)).exists()
                                                         for link in parse(page).links)


def test_plugins_add_sections_and_a_failing_one_stops_nothing(project: Path, tmp_path: Path) -> None:
    from cineml import hookimpl
    from cineml.manifest import load_project
    from cineml.testing import registry_with

    class Notes:
        @hookimpl
        def report_sections(self, project):
            return [("Notes", "<p id='notes'>shot on 35 mm</p>")]

    class Broken:
        @hookimpl
        def report_sections(self, project):
            raise RuntimeError("no notes today")

    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    page = gallery.build(load_project(copy / "project.toml", registry_with(Notes())))
    assert "<h2>Notes</h2><p id='notes'>shot on 35 mm</p>" in page.read_text()
    page = gallery.build(load_project(copy / "project.toml", registry_with(Notes(), Broken())))
    assert "A plugin failed to add its section (RuntimeError: no notes today)" in page.read_text()


def test_cineml_report_rebuilds_the_page(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    shutil.rmtree(copy / "report")
    env = {**os.environ, "CINEML_LOAD_PLUGINS": ""}
    done = subprocess.run([sys.executable, "-m", "cineml", "report", str(copy / "project.toml")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(copy / "report/index.html") and (copy / "report/index.html").exists()


def test_a_page_built_mid_training_is_complete_up_to_the_last_snapshot(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "live"
    root.mkdir()
    shutil.copytree(project / "footage", root / "footage")
    manifest = (project / "project.toml").read_text().replace("kimg = 0.06", "kimg = 1")
    (root / "project.toml").write_text(manifest.replace('[source]\nuse = "synthetic"\nseconds = 2\n', ""))
    env = {**os.environ, "CINEML_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cineml", "-q", "run", str(root / "project.toml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    page = root / "report/index.html"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if page.exists() and len(json.loads(parse(page).script or "[]")) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    links = parse(page)
    shots = json.loads(links.script or "[]")
    assert len(shots) >= 3 and all((page.parent / unquote(link)).exists() for link in links.links)
    staged = sorted(root.glob(".cineml/staging/train-*/fakes*.png"))
    assert len(shots) in (len(staged), len(staged) - 1)  # the newest grid may be waiting for its checkpoint
    assert [s["kimg"] for s in shots] == sorted(s["kimg"] for s in shots)


# --- in a real browser ---------------------------------------------------------------------------------


def chrome():
    """A headless Chromium driven by Selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    driver_path = shutil.which("chromedriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not driver_path or not browser:
        pytest.skip("no chromium and chromedriver here: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,2000", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_the_page_in_a_real_browser(project: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome()
    try:
        driver.get((project / "report/index.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        for image in images:  # lazy pictures load once they are on screen
            driver.execute_script("arguments[0].scrollIntoView()", image)
        WebDriverWait(driver, 20).until(lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im) for im in images))
        videos = driver.find_elements(By.TAG_NAME, "video")
        assert videos
        WebDriverWait(driver, 20).until(lambda d: all(
            d.execute_script("return arguments[0].readyState >= 1 || arguments[0].error !== null", v) for v in videos))
        for video in videos:
            state = driver.execute_script("return [arguments[0].error && arguments[0].error.code, "
                                          "arguments[0].duration]", video)
            assert state[0] is None and state[1] > 0, state
        slider = driver.find_element(By.ID, "kimg")
        driver.execute_script("arguments[0].scrollIntoView()", slider)
        slider.send_keys(Keys.HOME)
        seen = [driver.find_element(By.ID, "kimg-label").text]
        for _ in range(3):
            slider.send_keys(Keys.ARROW_RIGHT)
            seen.append(driver.find_element(By.ID, "kimg-label").text)
        assert seen == ["0 kimg", "0.02 kimg", "0.04 kimg", "0.06 kimg"]
        shown = driver.find_element(By.ID, "fake").get_attribute("src")
        assert shown and shown.endswith(json.loads(parse(project / "report/index.html").script or "")[-1]["thumb"])
        points = driver.execute_script(
            "return Array.from(document.querySelectorAll('polyline')).map(p => p.points.numberOfItems)")
        assert points == parse(project / "report/index.html").polylines
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        ARTIFACTS.mkdir(exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(ARTIFACTS / "gallery.png"))
    finally:
        driver.quit()


def test_a_picture_too_big_to_open_safely_is_linked_not_previewed(project: Path, tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("report"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every picture here is more than twice that
    project_obj = type("P", (), {"root": copy, "name": "copy", "manifest_path": copy / "project.toml",
                                 "source": None, "hook": None})()
    text = gallery.build(project_obj).read_text(encoding="utf-8")
    assert '<a href="../art/grid.png">grid.png</a> (too big to preview)' in text
