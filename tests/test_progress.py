"""Progress bars: what an artist sees while long work runs (rendered by a real rich console)."""

import io
import re
import time

from rich.console import Console

from cineml.progress import Progress


def render(unit: str, steps: int, pause: float) -> str:
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=160, color_system=None))
    with progress("Extracting frames", total=steps * 10, unit=unit) as bar:
        for _ in range(steps):
            bar.advance(10)
            time.sleep(pause)
        bar.update(info="3 damaged")
    return last_line(out)


def last_line(out: io.StringIO) -> str:
    """The bar as it was left on screen (the terminal's final redraw, without control codes)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-1]


def test_bar_shows_count_rate_and_info():
    line = render("frames", 4, 0.02)
    assert "Extracting frames" in line and "40/40" in line and "3 damaged" in line
    assert "frames/s" in line  # ~500 frames/s: shown as a rate


def test_slow_units_show_seconds_per_unit():
    line = render("kimg", 3, 0.02)  # 10 kimg per 0.02 s is fast; shrink the advance to make it slow
    assert "kimg/s" in line
    out = io.StringIO()
    with Progress(Console(file=out, force_terminal=True, width=160, color_system=None))(
            "Training", total=1, unit="kimg") as bar:
        for _ in range(3):
            bar.advance(0.01)
            time.sleep(0.02)
    assert "s/kimg" in last_line(out)


def test_disabled_progress_still_counts():
    with Progress(enabled=False)("Quiet", total=5) as bar:
        bar.advance(2)
        bar.update(completed=4)
    assert bar.completed == 4
