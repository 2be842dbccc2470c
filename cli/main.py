"""`ppt-labels`: a thin Typer layer over the pipeline and trainer libraries.

Commands live by concern (cli/build.py, cli/labels.py, cli/train.py, cli/evaluate.py,
cli/report.py) and are
registered here on the one app of cli/app.py; shared options are defined once in cli/options.py.
Commands import their libraries inside the function, so `ppt-labels --help` starts without torch.
"""

from __future__ import annotations

import sys

from cli import build, evaluate, exchange, labels, report, train
from cli.app import app, labels_app

build.register(app)
labels.register(app, labels_app)
exchange.register(labels_app)
train.register(app)
evaluate.register(app)
report.register(app)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
