"""The Typer app every command registers on: logging set-up and one-line user errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

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

# Loggers of this project; every other logger (open_clip logs "Parsing model identifier" on the
# root logger, Dask's cluster chatter, PIL...) speaks only at WARNING and above unless --verbose.
OWN_LOGGERS = ("pipeline", "trainer", "cli", "__main__")
_verbose = False


class _QuietThirdParty(logging.Filter):
    """Pass project records, and third-party records at WARNING or above."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".", 1)[0] in OWN_LOGGERS
        return own or record.levelno >= logging.WARNING


def setup_logging(verbose: bool) -> None:
    """Rich on a terminal; plain unwrapped lines when logs go to a file or a pipe (DVC, CI).

    Third-party loggers are quiet below WARNING unless `verbose`; `verbose` also makes user errors
    print their traceback."""
    global _verbose
    _verbose = verbose
    if err_console.is_terminal:
        handler: logging.Handler = RichHandler(console=err_console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=fmt, handlers=[handler], force=True
    )
    if not verbose:
        handler.addFilter(_QuietThirdParty())


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Configure logging for every subcommand."""
    setup_logging(verbose)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report `PptError`s as one red line and exit 2 (under --verbose, the traceback first)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PptError as exc:
            if _verbose:
                err_console.print_exception()
            # escaped: messages quote params sections as "[ingest]", which Rich reads as markup
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper
