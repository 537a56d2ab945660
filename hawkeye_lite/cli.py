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
    """Train a quality-rating policy with UA-GRPO + the implicit perception loss.

    With no arguments: the CPU demo (tiny model + generated data, a few minutes)."""
    from hawkeye_lite.config import ConfigError
    from hawkeye_lite.trainer import TrainingError, summary_table
    from hawkeye_lite.trainer import train as run_training

    if config is not None and resume is not None:
        raise typer.BadParameter("--resume continues a run with its saved config.yaml; use --set for changes, not --config")
    try:
        result = run_training(config, set_, resume)
    except (ConfigError, TrainingError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    if result.interrupted:
        typer.echo(f"interrupted at step {result.steps}; continue with: hawkeye-lite train --resume {result.run_dir}", err=True)
        raise typer.Exit(130)
    if result.eval_before or result.eval_after:
        typer.echo(summary_table(result))
    typer.echo(f"done in {result.seconds:.0f}s: {result.steps} RL steps; model in {result.run_dir / 'final'} "
               f"(hawkeye-lite score --model {result.run_dir / 'final'} IMAGE)")


@app.command()
def plot(
    run: Path = typer.Argument(..., help="Training run folder (holds metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG file to write (default: RUN/plot.png)."),
) -> None:
    """Draw a run's training curves (PNG): reward, held-out SRCC/PLCC, KL terms, entropies, uncertainty, lr.

    Panels: reward and its columns, held-out SRCC/PLCC, reference KL, perception KL, entropies,
    uncertainty and weight, parse/format rate, learning rate."""
    from hawkeye_lite.plot import plot_run

    try:
        typer.echo(plot_run(run, out))
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)


@app.command()
def push(
    run: Path = typer.Argument(..., help="Training run folder (its final/) or a model folder (final/, a checkpoint)."),
    repo: str = typer.Option(..., "--repo", help="Hub repository id, e.g. you/hawkeye-lite-koniq."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to push to (default: main)."),
    message: Optional[str] = typer.Option(None, "--message", help="Commit message."),
) -> None:
    """Upload a trained adapter (with its model card, hawkeye.json and config.yaml) to the Hugging Face Hub."""
    from hawkeye_lite.hub import HubError, push_to_hub

    try:
        url = push_to_hub(run, repo, private=private, revision=revision, commit_message=message,
                          log=lambda m: typer.echo(m, err=True))
    except HubError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(f"pushed to {url}")


# ----------------------------------------------------------------------------- model & scoring (issue #3)


@app.command("init-tiny")
def init_tiny(
    out: Path = typer.Argument(..., help="Folder to write the tiny checkpoint to."),
    seed: int = typer.Option(0, "--seed", help="Initialisation seed (same seed, same weights)."),
    arch: str = typer.Option("qwen2_5_vl", "--arch", help="qwen2_5_vl or qwen2_vl."),
) -> None:
    """Write a tiny randomly initialised Qwen2.5-VL (+ tokenizer and processor) for offline tests and demos."""
    from hawkeye_lite.model import build_tiny_model

    try:
        path = build_tiny_model(out, seed=seed, arch=arch)
    except ValueError as e:
        raise typer.BadParameter(str(e))
    typer.echo(f"wrote a tiny random {arch} checkpoint to {path}")


@app.command()
def score(
    images: List[str] = typer.Argument(..., help="Image files to score."),
    model: str = typer.Option(..., "--model", help="Run folder, adapter folder, full model folder or hub id."),
    samples: int = typer.Option(8, "--samples", help="Completions sampled per image (K)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object per image (JSON lines)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (0 = greedy)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Completion length cap (default: as trained, else 512)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed: same seed, same scores."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per generation batch."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    quantization: Optional[str] = typer.Option(None, "--quantization", help="nf4 or none (default: as trained)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Prompt + answer parser of a published checkpoint: "
                                         "visualquality_r1, q_insight, q_hawkeye, think (default: from the model id)."),
) -> None:
    """Score images: mean rating of K samples on the 1-5 scale, ± their spread."""
    import json as _json

    from hawkeye_lite.runlog import Progress
    from hawkeye_lite.scorer import Scorer

    try:
        scorer = Scorer.from_pretrained(model, device=device, quantization=quantization, max_new_tokens=max_new_tokens,
                                        **({"preset": preset} if preset else {}))
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    # One Scorer call per batch of inputs (seed + batch index), so a bar can follow them.
    results = []
    with Progress(len(images), "scoring", unit="img", lines=10 if len(images) > batch_size else 0) as bar:
        for k, start in enumerate(range(0, len(images), batch_size)):
            chunk = images[start:start + batch_size]
            results += scorer.score(chunk, samples=samples, temperature=temperature, seed=seed + k,
                                    batch_size=batch_size, on_error="skip")
            bar.update(len(chunk))
    for r in results:
        if json_:
            typer.echo(_json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False))
        elif not r.ok:
            typer.echo(f"{r.source}\tfailed: {r.error}")
        elif r.n_parsed == 0:
            typer.echo(f"{r.source}\tno score (0/{len(r.texts)} answers parsed)")
        else:
            typer.echo(f"{r.source}\t{r.score:.3f} ± {r.std:.3f}\t({r.n_parsed}/{len(r.texts)} parsed)")
    if any(not r.ok for r in results):
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- data & eval (issue #4)


def _load_data(data: List[str], on_bad: str, check_images: str, seed: int):
    """Load data specs, print the load summary to stderr; bad input exits with its file:line."""
    from hawkeye_lite.data.datasets import DataError, load_records

    try:
        res = load_records(data, on_bad=on_bad, check_images=check_images, seed=seed)
    except (DataError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(res.format(), err=True)
    return res


@app.command("eval")
def eval_(
    model: Path = typer.Option(..., "--model", help="Run folder or model directory the Scorer loads."),
    data: List[str] = typer.Option([], "--data", help="Data spec(s), e.g. json:demo/demo.json or koniq:DIR (repeatable)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Completions sampled per image (K); default: the Scorer's."),
    json_: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write per-image predictions to this CSV."),
    split: str = typer.Option("test", "--split", help="Which records to score: test | val | train | all."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per Scorer call."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (default: the Scorer's)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Completion length cap (default: as trained, else 512)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and for seeded splits."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, ... (default: the Scorer's choice)."),
    on_bad: str = typer.Option("skip", "--on-bad", help="Bad records: skip (reported) or fail."),
    check_images: str = typer.Option("full", "--check-images", help="Image checks at load: full | header | none."),
    suite: Optional[Path] = typer.Option(None, "--suite", help="Suite file naming the data specs of a standard "
                                         "protocol (configs/suites/koniq-cross.yaml); adds to --data."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write report.md / .csv / .json (per dataset "
                                              "+ mean, the papers' cross-dataset layout) to this folder."),
    plot_dir: Optional[Path] = typer.Option(None, "--plot", help="Write prediction-vs-MOS scatter PNGs with the "
                                            "fitted logistic, one per dataset, to this folder."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Prompt + answer parser of a published checkpoint "
                                         "(visualquality_r1, q_insight, q_hawkeye, think); default: from the model id."),
) -> None:
    """Score a dataset and report SRCC, PLCC (raw and logistic-fitted), KRCC, RMSE, parse rate per dataset."""
    import json as _json

    from hawkeye_lite.evaluate import evaluate, scorer_fn
    from hawkeye_lite.runlog import progress_callback

    suite_name = None
    if suite is not None:
        from hawkeye_lite.report import SuiteError, load_suite

        try:
            suite_name, suite_specs = load_suite(suite)
        except SuiteError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        data = list(data) + suite_specs
    if not data:
        typer.echo("error: give --data SPEC (repeatable) or --suite FILE", err=True)
        raise typer.Exit(2)
    res = _load_data(data, on_bad, check_images, seed)
    try:
        records = res.split(split)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--split")
    if not records:
        typer.echo(f"error: no records in split {split!r} (try --split all)", err=True)
        raise typer.Exit(2)

    from hawkeye_lite.scorer import Scorer

    try:
        scorer = Scorer.from_pretrained(str(model), device=device, **({"preset": preset} if preset else {}))
    except ValueError as e:  # an unknown --preset
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)

    report = evaluate(records, scorer_fn(scorer, samples=samples, temperature=temperature,
                                         max_new_tokens=max_new_tokens, seed=seed),
                      batch_size=batch_size, progress=progress_callback("scoring", unit="img"))
    if csv_out is not None:
        report.write_csv(csv_out)
        typer.echo(f"predictions written to {csv_out}", err=True)
    if report_dir is not None:
        from hawkeye_lite.report import write_report

        paths = write_report(report, report_dir, model=str(model), suite=suite_name, samples=samples,
                             extra={"preset": getattr(getattr(scorer, "preset", None), "name", None), "split": split})
        typer.echo(f"report written to {', '.join(map(str, paths))}", err=True)
    if plot_dir is not None:
        from hawkeye_lite.plot import plot_scatter

        paths = plot_scatter(report, plot_dir, title=Path(str(model)).name)
        typer.echo(f"scatter plots written to {', '.join(map(str, paths))}", err=True)
    if json_:
        typer.echo(_json.dumps(report.to_dict(), indent=1, allow_nan=False))
    else:
        typer.echo(report.table())


@app.command()
def degrade(
    data: List[str] = typer.Option(..., "--data", help="Data spec(s) whose images get degraded partners (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, data.json (with image_deg), degrade_meta.json."),
    seed: int = typer.Option(0, "--seed", help="Degradation seed: same seed, same files."),
    second_stage: bool = typer.Option(False, "--second-stage", help="Add a second, different degradation on top."),
    split: str = typer.Option("all", "--split", help="Records to degrade: all | train | val | test."),
    fmt: str = typer.Option("png", "--format", help="png (lossless) or jpg (the paper's: quality 95)."),
    on_bad: str = typer.Option("skip", "--on-bad", help="Bad records: skip (reported) or fail."),
) -> None:
    """Build original/degraded pairs offline for the perception loss."""
    from hawkeye_lite.data.degrade import DegradeRecipe, degrade_records

    res = _load_data(data, on_bad, "full", seed)
    records = res.split(split)
    if not records:
        typer.echo(f"error: no records in split {split!r}", err=True)
        raise typer.Exit(2)

    from hawkeye_lite.runlog import progress_callback

    try:
        degrade_records(records, out, seed=seed, recipe=DegradeRecipe(second_stage=second_stage), fmt=fmt,
                        progress=progress_callback("degrading", unit="img"))
    except ValueError as e:
        raise typer.BadParameter(str(e))
    typer.echo(f"wrote {len(records)} degraded partners to {out / 'images'} and {out / 'data.json'}")


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(Path("data/demo"), "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Generation seed."),
    scenes: int = typer.Option(64, "--scenes", help="Number of reference scenes."),
    per_scene: int = typer.Option(5, "--per-scene", help="Distorted versions per scene (plus the pristine one)."),
) -> None:
    """Write the generated demo dataset (images + JSON with train/test splits) to disk."""
    from hawkeye_lite.data.demo import DemoConfig, write_demo

    try:
        cfg = DemoConfig(n_scenes=scenes, per_scene=per_scene, seed=seed)
    except ValueError as e:
        raise typer.BadParameter(str(e))
    recs = write_demo(out, cfg)
    n_test = sum(r.split == "test" for r in recs)
    typer.echo(f"wrote {len(recs)} images ({len(recs) - n_test} train, {n_test} test) to {out}; "
               f"use --data json:{out / 'demo.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
