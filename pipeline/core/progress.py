"""The rich progress bar every long loop of the project uses (stages, caches, training)."""

from __future__ import annotations

from rich import get_console
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    *columns: ProgressColumn,
    console: Console | None = None,
    terminal_only: bool = False,
    transient: bool = False,
    show: bool = True,
) -> Progress:
    """A bar with description, count, elapsed and remaining time, then `columns`.

    Off a terminal rich prints each bar once, when it stops (a stage's summary line in DVC's
    log). With `terminal_only` it prints nothing there: for loops that log their own plain line
    per pass (training epochs), so a log file holds one line per epoch, never one per batch.
    `show=False` makes a bar that draws nothing anywhere (a DDP rank other than 0).
    """
    console = console or get_console()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *columns,
        console=console,
        transient=transient,
        disable=not show or (terminal_only and not console.is_terminal),
    )
