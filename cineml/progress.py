"""Progress bars for long work, shared by every stage (rich, or silent when quiet / not a TTY)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


class RateColumn(ProgressColumn):
    """Speed in the bar's unit: "240 frames/s", or "18.5 s/kimg" when one unit takes longer than a second."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit or "it"

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("")
        if speed >= 1:
            return Text(f"{speed:,.0f} {self.unit}/s" if speed >= 10 else f"{speed:.1f} {self.unit}/s")
        return Text(f"{1 / speed:,.1f} s/{self.unit}")


class Bar:
    """One task on a progress display: ``advance(n)``, ``update(completed=, info=)``."""

    def __init__(self, progress: RichProgress | None, task: TaskID | None) -> None:
        self._progress, self._task = progress, task
        self.completed = 0.0

    def advance(self, n: float = 1) -> None:
        self.completed += n
        if self._progress is not None:
            assert self._task is not None  # a bar on a display always has its task
            self._progress.advance(self._task, n)

    def update(self, completed: float | None = None, total: float | None = None, info: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if self._progress is not None:
            assert self._task is not None  # a bar on a display always has its task
            fields: dict[str, Any] = {} if info is None else {"info": info}
            self._progress.update(self._task, completed=completed, total=total, **fields)


class Progress:
    """Factory for progress bars; stages call ``with ctx.progress("Extracting", total=n) as bar``."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal

    @contextlib.contextmanager
    def __call__(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Bar]:
        if not self.enabled:
            yield Bar(None, None)
            return
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn(unit), RateColumn(unit), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}")]
        with RichProgress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(description, total=total, info="")
            yield Bar(progress, task)
