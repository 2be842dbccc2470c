"""The Typer app every command registers on: logging set-up and one-line user errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from pipeline.core.errors import PptError

app = typer.Typer(
    name="ppt-labels",
    help="Pseudo-labels and curriculum point prompting for weakly supervised referring "
    "image segmentation (PPT, CVPR 2024).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
labels_app = typer.Typer(help="Inspect and check label stores.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# Third-party loggers that speak at INFO about their own business (Dask's cluster chatter):
# quiet unless --verbose.
NOISY_LOGGERS = ("distributed", "asyncio", "PIL", "matplotlib", "urllib3")


def setup_logging(verbose: bool) -> None:
    """Rich on a terminal; plain unwrapped lines when logs go to a file or a pipe (DVC, CI)."""
    if err_console.is_terminal:
        handler: logging.Handler = RichHandler(console=err_console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=fmt, handlers=[handler], force=True
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Configure logging for every subcommand."""
    setup_logging(verbose)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report `PptError`s as one red line and exit 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PptError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
