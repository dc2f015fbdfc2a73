"""The ``gallery`` plugin: ``report/index.html``, one static page of everything a project made.

Built on the public lifecycle hooks like any plugin (a third party can replace it: run with
``CINEML_LOAD_PLUGINS`` without it, or add sections through the ``report_sections`` hook). The page is
rewritten atomically when a run starts, at every training snapshot (so an artist watching it over
``python -m http.server`` sees training go on), after every stage and when the run ends;
``cineml report PROJECT.toml`` rebuilds it alone.

Self-contained: no server, no internet, no script from elsewhere. Pictures are linked from the project
(relative paths), with thumbnails made once into ``report/thumbs/`` so a page of hundreds of 8K fakes grids
stays fast; a click opens the full picture. Plots are inline SVG drawn here: each is one line of points,
and a line chart is a few dozen lines of code, so no plotting library is imported at every snapshot
(matplotlib takes longer to import than the page takes to build) and the page needs nothing beside it.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cineml import CinemlError, Project, atomic_path, evenly_spaced, hookimpl

REPORT = "report"
THUMB_WIDTH = 320  # generated images
ART_WIDTH = 960  # fakes grids on the timeline, compose outputs
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
MOVIE_SUFFIXES = (".mp4", ".webm")
NOT_PLOTTED = {"kimg", "nimg", "step", "time"}
STILLS_SHOWN = 60  # per generate step


# --- what the project holds ---------------------------------------------------------------------------


def read_stats(path: Path) -> list[dict[str, Any]]:
    """stats.jsonl's records; a line cut short by a kill (or any unreadable line) is skipped."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("kimg"), (int, float)):
            records.append(record)
    return records


def series(records: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Every numeric statistic as (kimg, value) points, in the order the keys first appear."""
    found: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in NOT_PLOTTED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                found.setdefault(key, []).append((float(record["kimg"]), float(value)))
    return found


def snapshots(train: Path) -> list[tuple[float, Path]]:
    """The fakes grids of a training folder as (kimg, path), in training order."""
    from cineml import metadata

    found = []
    for path in train.glob("fakes*.png"):
        kimg = metadata(path)["kimg"]
        found.append((0.0 if kimg is None else float(kimg), path))
    return sorted(found)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- pieces of the page -------------------------------------------------------------------------------


class Page:
    """Builds the page for one project; ``thumbs`` made here are kept, the others removed at the end."""

    def __init__(self, project: Project) -> None:
        self.project, self.root = project, project.root
        self.out = self.root / REPORT
        self.thumbs = self.out / "thumbs"
        self.used: set[str] = set()

    def link(self, path: Path) -> str:
        """A URL for ``path`` relative to the page (spaces and non-ASCII names quoted)."""
        return quote(os.path.relpath(path, self.out).replace(os.sep, "/"))

    def thumb(self, path: Path, width: int = THUMB_WIDTH) -> str:
        """A link to a JPEG thumbnail of ``path``, made once per version of the file."""
        from PIL import Image

        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{width}".encode()).hexdigest()[:16]
        name = f"{key}.jpg"
        self.used.add(name)
        target = self.thumbs / name
        if not target.exists():
            self.thumbs.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as image:
                image = image.convert("RGB")
                if image.width > width:
                    image = image.resize((width, max(1, round(image.height * width / image.width))),
                                         Image.Resampling.LANCZOS)
                with atomic_path(target) as tmp:
                    image.save(tmp, format="JPEG", quality=85)
        return self.link(target)

    def preview(self, path: Path, width: int = ART_WIDTH) -> str | None:
        """A thumbnail's link, the picture's own link when it is too big to open safely, None when unreadable."""
        from PIL import Image

        try:
            return self.thumb(path, width)
        except Image.DecompressionBombError:
            return self.link(path)
        except (OSError, ValueError):  # half-written or damaged: leave it out of this version of the page
            return None

    def picture(self, path: Path, width: int = THUMB_WIDTH, caption: str = "") -> str:
        """A thumbnail that opens the full picture (a link alone for a picture too big to open safely)."""
        from PIL import Image

        try:
            small = self.thumb(path, width)
        except Image.DecompressionBombError:  # e.g. a facade of thousands of windows: link it, do not shrink it
            return f'<p><a href="{self.link(path)}">{html.escape(caption or path.name)}</a> (too big to preview)</p>'
        except (OSError, ValueError):  # unreadable or half-written: leave it out of this version of the page
            return ""
        text = html.escape(caption or path.name)
        return (f'<figure><a href="{self.link(path)}"><img src="{small}" alt="{text}" loading="lazy"></a>'
                f"<figcaption>{text}</figcaption></figure>")

    def tidy(self) -> None:
        if self.thumbs.is_dir():
            for old in self.thumbs.iterdir():
                if old.name not in self.used:
                    old.unlink(missing_ok=True)

    # --- sections

    def film(self) -> str:
        index = _read_json(self.root / "frames" / "index.json")
        rows = [("project", self.project.name), ("manifest", self.project.manifest_path.name)]
        if self.project.source is not None:
            rows.append(("film", self.project.source.name))
        if isinstance(index, dict):
            source = index.get("source") or {}
            if source.get("duration"):
                rows.append(("duration", f"{float(source['duration']):.2f} s"))
            if source.get("width"):
                rows.append(("size", f"{source.get('display_width') or source['width']}x"
                                     f"{source.get('display_height') or source.get('height')}"))
            if source.get("fps"):
                rows.append(("frame rate", f"{float(source['fps']):.3f} fps"))
            rate = index.get("fps")
            rate = f"{rate:g}" if isinstance(rate, (int, float)) else rate
            rows.append(("frames", f"{index.get('count')} at {rate} fps"
                                   + (f", {index['kept']} kept" if index.get("kept") not in (None, index.get("count"))
                                      else "")))
            if index.get("shots"):
                rows.append(("shots", str(index["shots"])))
        return _table(rows)

    def training(self, train: Path | None) -> str:
        if train is None or not train.is_dir():
            return "<p>No training yet.</p>"
        parts = []
        reals = train / "reals.png"
        if reals.exists():
            parts.append(f'<h3>Reals</h3><div class="row">{self.picture(reals, 480, "reals.png")}</div>')
        shots = [(kimg, path, small) for kimg, path in snapshots(train) if (small := self.preview(path)) is not None]
        if shots:
            data = json.dumps([{"kimg": kimg, "thumb": small, "full": self.link(path)} for kimg, path, small in shots])
            first_kimg, _, first_thumb = shots[-1]
            parts.append(
                f'<h3>Fakes at every snapshot ({len(shots)})</h3><div class="timeline">'
                f'<a id="fake-link" href="{self.link(shots[-1][1])}"><img id="fake" src="{first_thumb}" '
                f'alt="fakes grid"></a><div class="controls"><button id="play" type="button">play</button>'
                f'<input id="kimg" type="range" min="0" max="{len(shots) - 1}" value="{len(shots) - 1}" step="1">'
                f'<span id="kimg-label">{first_kimg:g} kimg</span></div></div>'
                f'<script id="snapshots" type="application/json">{_script_json(data)}</script>')
        plots = series(read_stats(train / "stats.jsonl"))
        if plots:
            parts.append('<h3>Statistics</h3><div class="plots">'
                         + "".join(line_plot(key, points) for key, points in plots.items()) + "</div>")
        return "".join(parts) or "<p>Training has written nothing yet.</p>"

    def generated(self) -> str:
        folder = self.root / "generated"
        if not folder.is_dir():
            return "<p>Nothing generated yet.</p>"
        parts = []
        for sub in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir() and not p.name.startswith("."))]:
            images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                continue
            shown = images if len(images) <= STILLS_SHOWN else evenly_spaced(images, STILLS_SHOWN)
            title = os.path.relpath(sub, self.root).replace(os.sep, "/")
            more = f" ({len(shown)} of {len(images)} shown)" if len(shown) < len(images) else f" ({len(images)})"
            parts.append(f"<h3>{html.escape(title)}{more}</h3><div class=\"row\">"
                         + "".join(self.picture(p) for p in shown) + "</div>")
        return "".join(parts) or "<p>Nothing generated yet.</p>"

    def art(self) -> str:
        folder = self.root / "art"
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if folder.is_dir() else []
        parts = []
        for path in files:
            suffix = path.suffix.lower()
            if suffix in MOVIE_SUFFIXES:
                parts.append(f'<figure><video controls preload="metadata" src="{self.link(path)}"></video>'
                             f"<figcaption>{html.escape(path.name)}</figcaption></figure>")
            elif suffix in IMAGE_SUFFIXES:
                parts.append(self.picture(path, ART_WIDTH))
            else:
                parts.append(f'<p><a href="{self.link(path)}">{html.escape(path.name)}</a></p>')
        return '<div class="row art">' + "".join(parts) + "</div>" if parts else "<p>No art yet.</p>"

    def stages(self, record: dict[str, Any] | None, plan: list[dict[str, Any]] | None) -> str:
        rows = (record or {}).get("stages") or plan or []
        if not rows:
            return "<p>No run recorded yet.</p>"
        body = []
        for entry in rows:
            seconds = entry.get("seconds")
            options = entry.get("options")
            text = html.escape(json.dumps(options, indent=1, default=str))
            settings = f"<details><summary>settings</summary><pre>{text}</pre></details>" if options else ""
            stage, use = html.escape(str(entry.get("stage"))), html.escape(str(entry.get("use", "")))
            ran = "ran" if entry.get("ran", entry.get("run")) else "skipped"
            body.append(f"<tr><td>{stage}</td><td>{use}</td><td>{ran}</td>"
                        f"<td>{html.escape(str(entry.get('reason', '')))}</td>"
                        f"<td>{'' if seconds is None else f'{float(seconds):.1f} s'}</td><td>{settings}</td></tr>")
        return ("<table><tr><th>stage</th><th>use</th><th></th><th>why</th><th>time</th><th></th></tr>"
                + "".join(body) + "</table>")

    def extra(self) -> list[tuple[str, str]]:
        if self.project.hook is None:  # a project made by hand, not loaded with the plugins
            return []
        found = []
        for result in self.project.hook.report_sections(project=self.project):
            for item in result or []:
                if isinstance(item, (tuple, list)) and len(item) == 2:
                    found.append((str(item[0]), str(item[1])))
        return found


def _table(rows: Sequence[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def _script_json(text: str) -> str:
    """JSON safe inside a <script> element."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def line_plot(title: str, points: Sequence[tuple[float, float]], width: int = 300, height: int = 150) -> str:
    """One statistic against kimg as an inline SVG line, with its range on the axes."""
    pad_left, pad, pad_bottom = 46, 8, 22
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    y1, y0 = (y1, y0) if y1 > y0 else (y0 + 0.5, y0 - 0.5)

    def sx(x: float) -> float:
        return pad_left + (x - x0) / (x1 - x0) * (width - pad_left - pad)

    def sy(y: float) -> float:
        return pad + (y1 - y) / (y1 - y0) * (height - pad - pad_bottom)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    dot = f'<circle class="dot" cx="{sx(xs[0]):.1f}" cy="{sy(ys[0]):.1f}" r="2.5"/>' if len(points) == 1 else ""
    name = html.escape(title)
    bottom = height - pad_bottom
    return (f'<figure class="plot"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{name} against kimg">'
            f'<line x1="{pad_left}" y1="{bottom}" x2="{width - pad}" y2="{bottom}" class="axis"/>'
            f'<line x1="{pad_left}" y1="{pad}" x2="{pad_left}" y2="{bottom}" class="axis"/>'
            f'<text x="{pad_left - 4}" y="{pad + 8}" text-anchor="end">{_number(y1)}</text>'
            f'<text x="{pad_left - 4}" y="{bottom}" text-anchor="end">{_number(y0)}</text>'
            f'<text x="{pad_left}" y="{height - 6}">{_number(x0)}</text>'
            f'<text x="{width - pad}" y="{height - 6}" text-anchor="end">{_number(x1)} kimg</text>'
            f'<polyline class="series" data-points="{len(points)}" points="{line}"/>{dot}</svg>'
            f"<figcaption>{name}</figcaption></figure>")


def _number(value: float) -> str:
    return f"{value:.3g}"


# --- the page -----------------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 2rem 3rem; background: #111; color: #ddd; }
a { color: #9cf; } h1 { font-weight: 500; } h2 { border-bottom: 1px solid #333; padding-top: 1rem; }
table { border-collapse: collapse; } th, td { text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }
figure { display: inline-block; margin: 0 8px 8px 0; } figcaption { font-size: 12px; color: #999; }
img { max-width: 100%; display: block; } .row { display: flex; flex-wrap: wrap; align-items: flex-start; }
.art video { max-width: 960px; } .timeline img { max-width: 960px; width: 100%; image-rendering: auto; }
.controls { display: flex; gap: 8px; align-items: center; margin: 6px 0; } #kimg { flex: 1; max-width: 860px; }
.plot svg { background: #181818; } .plot text { fill: #999; font-size: 10px; }
.axis { stroke: #555; } .series { fill: none; stroke: #fc6; stroke-width: 1.5; } .dot { fill: #fc6; }
pre { white-space: pre-wrap; color: #bbb; } .status { color: #999; }
"""

SCRIPT = """
(function () {
  var data = document.getElementById("snapshots");
  if (!data) return;
  var shots = JSON.parse(data.textContent), slider = document.getElementById("kimg");
  var img = document.getElementById("fake"), link = document.getElementById("fake-link");
  var label = document.getElementById("kimg-label"), button = document.getElementById("play"), timer = null;
  function show(i) {
    var s = shots[i]; slider.value = i; img.src = s.thumb; link.href = s.full; label.textContent = s.kimg + " kimg";
  }
  slider.addEventListener("input", function () { show(Number(slider.value)); });
  button.addEventListener("click", function () {
    if (timer) { clearInterval(timer); timer = null; button.textContent = "play"; return; }
    button.textContent = "pause";
    timer = setInterval(function () { show((Number(slider.value) + 1) % shots.length); }, 250);
  });
  window.cinemlShow = show;
})();
"""


def build(project: Project, train: Path | None = None, record: dict[str, Any] | None = None,
          plan: list[dict[str, Any]] | None = None, status: str = "") -> Path:
    """Write ``report/index.html`` for ``project`` (``train``: a training folder still being written)."""
    page = Page(project)
    train = train if train is not None else project.root / "train"
    if record is None and not plan:
        record = _read_json(project.root / "run.json")
    sections = [("Film", page.film()), ("Training", page.training(train)), ("Generated", page.generated()),
                ("Art", page.art()), ("Stages", page.stages(record, plan))]
    try:
        sections += page.extra()
    except Exception as exc:  # noqa: BLE001 (another plugin's section must not stop the page)
        failed = html.escape(f"{type(exc).__name__}: {exc}")
        sections.append(("Sections from plugins", f"<p>A plugin failed to add its section ({failed}).</p>"))
    state = status or (record or {}).get("status") or ""
    body = "".join(f"<section><h2>{html.escape(title)}</h2>{content}</section>" for title, content in sections)
    text = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(project.name)} · CineML"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(project.name)}</h1>"
            f"<p class=\"status\">{html.escape(state)}</p>{body}<script>{SCRIPT}</script></body></html>")
    page.out.mkdir(parents=True, exist_ok=True)
    target = page.out / "index.html"
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    page.tidy()
    return target


# --- hooks --------------------------------------------------------------------------------------------


_PLANS: dict[Path, list[dict[str, Any]]] = {}  # the plan of the run going on in each project, for its page


def _safely(what: str, func: Any, *args: Any, **kwargs: Any) -> None:
    """Build the page; a failure is said and the run goes on (the page is a view, not an output)."""
    try:
        func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        print(f"gallery: could not rebuild report/index.html {what} ({type(exc).__name__}: {exc})")


@hookimpl
def run_started(project: Project, plan: list[dict[str, Any]]) -> None:
    _PLANS[project.root] = plan
    _safely("at the start", build, project, plan=plan, status="running")


@hookimpl
def snapshot_written(project: Project, kimg: float, checkpoint: Path) -> None:
    _safely(f"at {kimg:g} kimg", build, project, train=Path(checkpoint).parent, plan=_PLANS.get(project.root),
            status=f"training: {kimg:g} kimg")


@hookimpl
def stage_finished(project: Project, stage: str) -> None:
    _safely(f"after {stage}", build, project, plan=_PLANS.get(project.root), status=f"running: {stage} finished")


@hookimpl
def run_finished(project: Project, record: dict[str, Any]) -> None:
    _PLANS.pop(project.root, None)
    _safely("at the end", build, project, record=record)
    print(f"Gallery: {project.root / REPORT / 'index.html'}")


@hookimpl
def run_failed(project: Project, record: dict[str, Any]) -> None:
    _PLANS.pop(project.root, None)
    _safely("after the failure", build, project, record=record)


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    @cli.command("report")
    @click.argument("manifest", type=click.Path(dir_okay=True, path_type=Path))
    @click.pass_context
    def report(ctx: click.Context, manifest: Path) -> None:
        """Rebuild the project's gallery page, report/index.html, from what it holds."""
        try:
            page = build(ctx.obj["load_project"](manifest))
        except CinemlError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(str(page))
