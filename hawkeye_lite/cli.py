"""The `hawkeye-lite` command line. Each command is a thin shell over a library module;
heavy imports (torch, transformers) happen inside the commands so `--help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="hawkeye-lite",
    help="Reinforcement-learned image quality assessment (Q-Hawkeye) on one GPU.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """hawkeye-lite: train and serve a Q-Hawkeye image-quality model."""


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (default: configs/demo.yaml)."),
    set_: List[str] = typer.Option([], "--set", help="Override a config key: --set a.b=value (repeatable)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run directory to resume from."),
) -> None:
    """Train a quality-rating policy with UA-GRPO + the implicit perception loss."""
    raise typer.BadParameter(
        "`hawkeye-lite train` is not implemented yet: the trainer is issue #5. "
        "The kernels (hawkeye_lite.kernels) are available now."
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
