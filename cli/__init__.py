"""The command-line interface: a thin Typer layer (`ppt-labels`) over the libraries."""
