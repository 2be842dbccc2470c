"""The progress bar of long loops: drawn on a terminal, silent or one summary line off it."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import TextColumn

from pipeline.core.progress import progress_bar


def _run(console: Console, **kw: bool) -> str:
    with progress_bar(TextColumn("loss {task.fields[loss]}"), console=console, **kw) as bar:
        task = bar.add_task("epoch 1/2 semantic", total=3, loss="…")
        for step in range(3):
            bar.update(task, advance=1, loss=f"{0.5 / (step + 1):.4g}")
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_training_bar_draws_on_a_terminal_only() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    drawn = _run(terminal, terminal_only=True)
    assert "epoch 1/2 semantic" in drawn and "3/3" in drawn and "loss 0.1667" in drawn
    assert "━" in drawn  # a bar, with its running loss and counts

    piped = Console(file=io.StringIO(), force_terminal=False, width=120)
    assert _run(piped, terminal_only=True) == ""  # the epoch's own log line is the record
    hidden = Console(file=io.StringIO(), force_terminal=True, width=120)
    assert _run(hidden, terminal_only=True, show=False) == ""  # DDP ranks other than 0


def test_stage_bar_prints_one_summary_line_off_a_terminal() -> None:
    piped = Console(file=io.StringIO(), force_terminal=False, width=120)
    lines = _run(piped).strip().splitlines()
    assert len(lines) == 1 and "3/3" in lines[0]
