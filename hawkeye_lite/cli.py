"""The `hawkeye-lite` command line. Each command is a thin shell over a library module;
heavy imports (torch, transformers) happen inside the commands so `--help` stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors its own click; older ones use click itself
    from typer import _click as click
    from typer._click import exceptions as _click_exceptions
except ImportError:  # pragma: no cover
    import click
    from click import exceptions as _click_exceptions


class _Group(TyperGroup):
    """Every failure leaves the program as one line on stderr and an exit code (errors.py):
    2 bad input, 1 the work failed, 130 interrupted; --debug / HAWKEYE_DEBUG=1 re-raises."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from hawkeye_lite.errors import classify, debug_enabled

        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except _click_exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except _click_exceptions.UsageError as e:
            where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(2)
        except typer.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except _click_exceptions.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except Exception as e:
            if debug_enabled(argv):
                raise
            code, line = classify(e)
            if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike: rank 0 says it
                click.echo(line, err=True)
            sys.exit(code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="hawkeye-lite",
    help="Reinforcement-learned image quality assessment (Q-Hawkeye) on one GPU.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Group,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error (also HAWKEYE_DEBUG=1)."),
) -> None:
    """hawkeye-lite: train and serve a Q-Hawkeye image-quality model."""


def _fail(message: str) -> None:
    """Bad input found before any work: one line, exit 2."""
    from hawkeye_lite.errors import UserError

    raise UserError(message)


def _check_output_file(path: Path, option: str) -> None:
    """An output file must be writable before hours of work go into it."""
    import os

    if path.is_dir():
        _fail(f"{option} {path}: is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"{option} {path}: cannot create {parent} ({e.strerror or e})")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        _fail(f"{option} {path}: not writable")


def _check_output_dir(out: Path, option: str, overwrite: bool, owned: List[str]) -> None:
    """An output folder must be empty (or only hold what this command wrote, with --overwrite)."""
    from hawkeye_lite.runfolder import remove_named

    if out.exists() and not out.is_dir():
        _fail(f"{option} {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            _fail(f"{option} {out}: not empty; use --overwrite to replace its contents, or choose another folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in owned)
        if foreign:
            _fail(
                f"{option} {out}: --overwrite only replaces what this command writes ({', '.join(owned)}), "
                f"but it also holds {', '.join(foreign[:5])}; choose another folder"
            )
        remove_named(out, owned)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"{option} {out}: cannot create it ({e.strerror or e})")


def _check_sampling(
    samples: Optional[int], batch_size: int, temperature: Optional[float], max_new_tokens: Optional[int]
) -> None:
    import math

    if samples is not None and samples < 1:
        _fail(f"--samples: must be >= 1, got {samples}")
    if batch_size < 1:
        _fail(f"--batch-size: must be >= 1, got {batch_size}")
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        _fail(f"--temperature: must be >= 0 (0 = greedy), got {temperature}")
    if max_new_tokens is not None and max_new_tokens < 1:
        _fail(f"--max-new-tokens: must be >= 1, got {max_new_tokens}")


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (default: configs/demo.yaml)."),
    set_: List[str] = typer.Option([], "--set", help="Override a config key: --set a.b=value (repeatable)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run directory to resume from."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in output_dir (else refused)."),
) -> None:
    """Train a quality-rating policy with UA-GRPO + the implicit perception loss.

    With no arguments: the CPU demo (tiny model + generated data, a few minutes)."""
    from hawkeye_lite.runloop import closing_line, summary_table
    from hawkeye_lite.trainer import train as run_training

    if config is not None and resume is not None:
        _fail("--resume continues a run with its saved config.yaml; use --set for changes, not --config")
    result = run_training(config, set_, resume, overwrite=overwrite)
    # Stopped by a signal: 128 + its number, as a shell reports it (SIGINT 130, SIGTERM 143,
    # SIGUSR1 138), so a job script can tell "stopped, resumable" from "done" (0) and "failed" (1, 2).
    code = 128 + _signum(result.stopped_by) if result.interrupted else 0
    if not result.main:  # torchrun: rank 0 speaks for the run
        raise typer.Exit(code)
    if result.interrupted:
        what = f"stopped by {result.stopped_by}" if result.stopped_by else "interrupted"
        where = (
            f"at step {result.steps} (checkpoint {result.checkpoint})"
            if result.checkpoint is not None
            else "before its first checkpoint (a finished warm start is reused)"
        )
        typer.echo(f"{what} {where}; continue with: hawkeye-lite train --resume {result.run_dir}", err=True)
        raise typer.Exit(code)
    if result.eval_before or result.eval_after:
        typer.echo(summary_table(result))
    from hawkeye_lite.plot import PLOT_FILE

    closing = closing_line(result, result.run_dir / PLOT_FILE)
    if closing:
        typer.echo(closing)
    typer.echo(
        f"done in {result.seconds:.0f}s: {result.steps} RL steps; model in {result.run_dir / 'final'} "
        f"(hawkeye-lite score --model {result.run_dir / 'final'} IMAGE)"
    )


def _signum(name) -> int:
    import signal

    return int(getattr(signal, name, signal.SIGINT)) if name else int(signal.SIGINT)


@app.command()
def plot(
    run: Path = typer.Argument(..., help="Training run folder (holds metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG file to write (default: RUN/plot.png)."),
) -> None:
    """Draw a run's training curves (PNG): reward, held-out SRCC/PLCC, KL terms, entropies, uncertainty, lr.

    Panels: reward and its columns, held-out SRCC/PLCC, reference KL, perception KL, entropies,
    uncertainty and weight, parse/format rate, learning rate."""
    from hawkeye_lite.plot import plot_run

    if not (run / "metrics.jsonl").is_file():
        _fail(f"{run}: no metrics log (metrics.jsonl; is it a training run folder?)")
    if out is not None:
        _check_output_file(out, "--out")
    typer.echo(plot_run(run, out))


@app.command()
def push(
    run: Path = typer.Argument(..., help="Training run folder (its final/) or a model folder (final/, a checkpoint)."),
    repo: str = typer.Option(..., "--repo", help="Hub repository id, e.g. you/hawkeye-lite-koniq."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to push to (default: main)."),
    message: Optional[str] = typer.Option(None, "--message", help="Commit message."),
) -> None:
    """Upload a trained adapter (with its model card, hawkeye.json and config.yaml) to the Hugging Face Hub."""
    from hawkeye_lite.hub import push_to_hub

    url = push_to_hub(
        run, repo, private=private, revision=revision, commit_message=message, log=lambda m: typer.echo(m, err=True)
    )  # a HubError is bad input: one line, exit 2
    typer.echo(f"pushed to {url}")


# ----------------------------------------------------------------------------- model & scoring (issue #3)


@app.command("init-tiny")
def init_tiny(
    out: Path = typer.Argument(..., help="Folder to write the tiny checkpoint to."),
    seed: int = typer.Option(0, "--seed", help="Initialisation seed (same seed, same weights)."),
    arch: str = typer.Option("qwen2_5_vl", "--arch", help="qwen2_5_vl, qwen2_vl or qwen3_vl."),
    thinking: bool = typer.Option(
        False, "--thinking", help="Qwen3-VL: the -Thinking chat template (its answers open with <think>)."
    ),
) -> None:
    """Write a tiny randomly initialised Qwen2.5-VL (or Qwen2-VL / Qwen3-VL) with tokenizer and processor, for offline tests and demos."""
    from hawkeye_lite.tiny_model import build_tiny_model

    if arch not in ("qwen2_5_vl", "qwen2_vl", "qwen3_vl"):
        _fail(f"--arch: must be qwen2_5_vl, qwen2_vl or qwen3_vl, got {arch!r}")
    if thinking and arch != "qwen3_vl":
        _fail("--thinking: only with --arch qwen3_vl (the Qwen3-VL -Thinking chat template)")
    _check_output_dir(out, "OUT", overwrite=False, owned=[])
    path = build_tiny_model(out, seed=seed, arch=arch, thinking=thinking)
    typer.echo(f"wrote a tiny random {arch}{' (thinking)' if thinking else ''} checkpoint to {path}")


@app.command()
def score(
    images: Optional[List[str]] = typer.Argument(
        None, help="Image files, folders (recursive) and @lists (a text file of paths, one per line)."
    ),
    model: str = typer.Option(..., "--model", help="Run folder, adapter folder, full model folder or hub id."),
    data: List[str] = typer.Option([], "--data", help="Dataset spec(s) whose images to score, as eval reads them."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Write rows to this .csv or .jsonl as images finish; the same command again continues it.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start --out again (its settings may differ)."),
    texts: bool = typer.Option(False, "--texts", help="Keep the K completions in --out too."),
    samples: int = typer.Option(8, "--samples", help="Completions sampled per image (K)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object per image (JSON lines)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (0 = greedy)."),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Completion length cap (default: as trained, else 512)."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed: same seed, same scores."),
    stratified: bool = typer.Option(
        False,
        "--stratified",
        help="Draw the K samples with stratified uniforms "
        "(each exact, together an even cover: a steadier mean for the same K).",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per generation batch."),
    workers: int = typer.Option(2, "--workers", help="Threads reading and preparing images ahead (0: none)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    quantization: Optional[str] = typer.Option(None, "--quantization", help="nf4 or none (default: as trained)."),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help="Prompt + answer parser of a published checkpoint: "
        "visualquality_r1, q_insight, q_hawkeye, think (default: from the model id).",
    ),
) -> None:
    """Score images: mean rating of K samples on the 1-5 scale, ± their spread. With --out, a
    collection of any size: rows are appended as batches finish, and the same command run again
    after any stop continues where it was."""
    import signal

    import torch

    from hawkeye_lite.collection import expand_inputs
    from hawkeye_lite.scorer import Scorer

    _check_sampling(samples, batch_size, temperature, max_new_tokens)
    if quantization not in (None, "nf4", "none"):
        _fail(f"--quantization: must be nf4 or none, got {quantization!r}")
    if workers < 0:
        _fail(f"--workers: must be >= 0, got {workers}")
    if not images and not data:
        _fail("nothing to score: give image files, folders, @lists or --data")
    if (texts or overwrite) and out is None:
        _fail(f"{'--texts' if texts else '--overwrite'}: only with --out")
    if json_ and out is not None:
        _fail("--json: prints rows to the terminal; with --out they go to the file (name it .jsonl for JSON)")
    if out is not None:  # before the model loads
        from hawkeye_lite.scorefile import check_format

        check_format(out)
        _check_output_file(out, "--out")
    found = expand_inputs(list(images or []), list(data))
    for note in found.notes:
        typer.echo(note, err=True)
    scorer = Scorer.from_pretrained(
        model,
        device=device,
        quantization=quantization,
        max_new_tokens=max_new_tokens,
        **({"preset": preset} if preset else {}),
    )
    options = dict(
        samples=samples, temperature=temperature, seed=seed, batch_size=batch_size, stratified=stratified,
        workers=workers,
    )  # fmt: skip

    got = {}

    def stop(signum, frame):  # SIGTERM (a pre-empted machine, docker stop) like Ctrl-C
        got["signal"] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    if workers and scorer.policy.device.type == "cpu":
        # The workers need cores too: torch's busy-waiting threads on every core would slow both.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    try:
        _score_files(scorer, found.paths, out, overwrite, texts, json_, batch_size, options, model)
    except KeyboardInterrupt:
        if out is None:
            raise
        typer.echo(f"stopped: the images scored so far are in {out}; run the same command again to continue", err=True)
        raise typer.Exit(128 + got.get("signal", signal.SIGINT)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _score_files(scorer, found_paths, out, overwrite, texts, json_, batch_size, options, model) -> None:
    """`score`'s work: printed lines, or rows in --out (resumed)."""
    import json as _json

    from hawkeye_lite.runlog import Progress

    if out is None:
        failed = 0
        with Progress(len(found_paths), "scoring", unit="img", lines=10 if len(found_paths) > batch_size else 0) as bar:
            for r in scorer.score_iter(found_paths, **options):
                bar.update(1)
                failed += not r.ok
                if json_:
                    typer.echo(_json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False))
                elif not r.ok:
                    typer.echo(f"{r.source}\tfailed: {r.error}")
                elif r.n_parsed == 0:
                    typer.echo(f"{r.source}\tno score (0/{len(r.texts)} answers parsed)")
                else:
                    typer.echo(f"{r.source}\t{r.score:.3f} ± {r.std:.3f}\t({r.n_parsed}/{len(r.texts)} parsed)")
        if failed:
            raise typer.Exit(2)  # an unreadable input is bad input; the others are scored above
        return

    from hawkeye_lite.scorefile import ScoreFile, model_fingerprint, score_to_file

    settings = {
        "model": str(Path(model).resolve()) if Path(model).exists() else model,
        "weights": model_fingerprint(scorer),
        "prompt": scorer.prompt.name,
        "preset": scorer.preset.name if scorer.preset is not None else None,
        **{k: options[k] for k in ("samples", "seed", "temperature", "stratified")},
        "top_p": 1.0,
        "top_k": 0,
        "max_new_tokens": scorer.max_new_tokens,
        "quantization": scorer.policy.config.quantization,
        "dtype": str(scorer.policy.dtype).replace("torch.", ""),
    }
    file = ScoreFile(out, settings, overwrite=overwrite, texts=texts)

    def bar(n):
        return Progress(n, "scoring", unit="img", lines=20 if n > batch_size else 0)

    job = score_to_file(scorer, found_paths, file, progress=bar, **options)
    for note in job.notes:
        typer.echo(note, err=True)
    typer.echo(
        f"{out}: {job.total} images: {job.scored} scored now, {job.earlier} earlier"
        + (f"; {job.failed} could not be read (their error column says why)" if job.failed else "")
    )
    if job.failed:
        raise typer.Exit(2)  # unreadable inputs are bad input; every other image is in the file


# ----------------------------------------------------------------------------- data & eval (issue #4)


def _load_data(data: List[str], on_bad: str, check_images: str, seed: int):
    """Load data specs, print the load summary to stderr; bad input exits with its file:line."""
    from hawkeye_lite.data import load_records

    if on_bad not in ("skip", "fail"):
        _fail(f"--on-bad: must be skip or fail, got {on_bad!r}")
    if check_images not in ("full", "header", "none"):
        _fail(f"--check-images: must be full, header or none, got {check_images!r}")
    res = load_records(data, on_bad=on_bad, check_images=check_images, seed=seed)
    typer.echo(res.format(), err=True)
    return res


def _check_split(split: str) -> None:
    if split not in ("train", "val", "test", "all"):
        _fail(f"--split: must be train, val, test or all, got {split!r}")


@app.command("eval")
def eval_(
    model: Path = typer.Option(..., "--model", help="Run folder or model directory the Scorer loads."),
    data: List[str] = typer.Option(
        [], "--data", help="Data spec(s), e.g. json:demo/demo.json or koniq:DIR (repeatable)."
    ),
    samples: Optional[int] = typer.Option(
        None, "--samples", help="Completions sampled per image (K); default: the Scorer's."
    ),
    json_: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write per-image predictions to this CSV."),
    split: str = typer.Option("test", "--split", help="Which records to score: test | val | train | all."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per Scorer call."),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", help="Sampling temperature (default: the Scorer's)."
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", help="Completion length cap (default: as trained, else 512)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and for seeded splits."),
    stratified: bool = typer.Option(
        False,
        "--stratified",
        help="Draw the K samples with stratified uniforms, as "
        "a training run's evaluation does with eval.stratified (a steadier mean).",
    ),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, ... (default: the Scorer's choice)."),
    on_bad: str = typer.Option("skip", "--on-bad", help="Bad records: skip (reported) or fail."),
    check_images: str = typer.Option("full", "--check-images", help="Image checks at load: full | header | none."),
    suite: Optional[Path] = typer.Option(
        None,
        "--suite",
        help="Suite file naming the data specs of a standard "
        "protocol (configs/suites/koniq-cross.yaml); adds to --data.",
    ),
    report_dir: Optional[Path] = typer.Option(
        None,
        "--report",
        help="Write report.md / .csv / .json (per dataset + mean, the papers' cross-dataset layout) to this folder.",
    ),
    plot_dir: Optional[Path] = typer.Option(
        None,
        "--plot",
        help="Write prediction-vs-MOS scatter PNGs with the fitted logistic, one per dataset, to this folder.",
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help="Prompt + answer parser of a published checkpoint "
        "(visualquality_r1, q_insight, q_hawkeye, think); default: from the model id.",
    ),
) -> None:
    """Score a dataset and report SRCC, PLCC (raw and logistic-fitted), KRCC, RMSE, parse rate per dataset."""
    import json as _json

    from hawkeye_lite.evaluate import evaluate, scorer_fn
    from hawkeye_lite.runlog import progress_callback

    _check_split(split)
    _check_sampling(samples, batch_size, temperature, max_new_tokens)
    if csv_out is not None:
        _check_output_file(csv_out, "--csv")
    for folder, option in ((report_dir, "--report"), (plot_dir, "--plot")):
        if folder is not None:
            _check_output_file(folder / "report.md", option)
    suite_name = None
    if suite is not None:
        from hawkeye_lite.report import load_suite

        suite_name, suite_specs = load_suite(suite)
        data = list(data) + suite_specs
    if not data:
        _fail("give --data SPEC (repeatable) or --suite FILE")
    res = _load_data(data, on_bad, check_images, seed)
    records = res.split(split)
    if not records:
        _fail(f"--split {split}: no records in that split of {', '.join(data)} (try --split all)")

    from hawkeye_lite.scorer import Scorer

    scorer = Scorer.from_pretrained(str(model), device=device, **({"preset": preset} if preset else {}))

    report = evaluate(
        records,
        scorer_fn(
            scorer,
            samples=samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            stratified=stratified,
        ),
        batch_size=batch_size,
        progress=progress_callback("scoring", unit="img"),
    )
    # The results first: a failing optional file must not cost the user the numbers.
    if json_:
        typer.echo(_json.dumps(report.to_dict(), indent=1, allow_nan=False))
    else:
        typer.echo(report.table())
    if csv_out is not None:
        report.write_csv(csv_out)
        typer.echo(f"predictions written to {csv_out}", err=True)
    if report_dir is not None:
        from hawkeye_lite.report import write_report

        paths = write_report(
            report,
            report_dir,
            model=str(model),
            suite=suite_name,
            samples=samples,
            extra={"preset": getattr(getattr(scorer, "preset", None), "name", None), "split": split},
        )
        typer.echo(f"report written to {', '.join(map(str, paths))}", err=True)
    if plot_dir is not None:
        from hawkeye_lite.plot import plot_scatter

        paths = plot_scatter(report, plot_dir, title=Path(str(model)).name)
        typer.echo(f"scatter plots written to {', '.join(map(str, paths))}", err=True)


@app.command()
def degrade(
    data: List[str] = typer.Option(..., "--data", help="Data spec(s) whose images get degraded partners (repeatable)."),
    out: Path = typer.Option(
        ..., "--out", help="Output folder: images/, data.json (with image_deg), degrade_meta.json."
    ),
    seed: int = typer.Option(0, "--seed", help="Degradation seed: same seed, same files."),
    second_stage: bool = typer.Option(False, "--second-stage", help="Add a second, different degradation on top."),
    split: str = typer.Option("all", "--split", help="Records to degrade: all | train | val | test."),
    fmt: str = typer.Option("png", "--format", help="png (lossless) or jpg (the paper's: quality 95)."),
    on_bad: str = typer.Option("skip", "--on-bad", help="Bad records: skip (reported) or fail."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what an earlier degrade wrote to --out."),
) -> None:
    """Build original/degraded pairs offline for the perception loss."""
    from hawkeye_lite.data.degrade import DegradeRecipe, degrade_records

    _check_split(split)
    if fmt not in ("png", "jpg"):
        _fail(f"--format: must be png or jpg, got {fmt!r}")
    _check_output_dir(out, "--out", overwrite, owned=["images", "data.json", "degrade_meta.json"])
    res = _load_data(data, on_bad, "full", seed)
    records = res.split(split)
    if not records:
        _fail(f"--split {split}: no records in that split of {', '.join(data)}")

    from hawkeye_lite.runlog import progress_callback

    degrade_records(
        records,
        out,
        seed=seed,
        recipe=DegradeRecipe(second_stage=second_stage),
        fmt=fmt,
        progress=progress_callback("degrading", unit="img"),
    )
    typer.echo(f"wrote {len(records)} degraded partners to {out / 'images'} and {out / 'data.json'}")


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(Path("data/demo"), "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Generation seed."),
    scenes: int = typer.Option(64, "--scenes", help="Number of reference scenes."),
    per_scene: int = typer.Option(5, "--per-scene", help="Distorted versions per scene (plus the pristine one)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a demo dataset written to --out before."),
) -> None:
    """Write the generated demo dataset (images + JSON with train/test splits) to disk."""
    from hawkeye_lite.data.demo import DemoConfig, write_demo
    from hawkeye_lite.errors import UserError

    try:
        cfg = DemoConfig(n_scenes=scenes, per_scene=per_scene, seed=seed)
    except ValueError as e:
        raise UserError(f"demo-data: {e}") from None
    _check_output_dir(out, "--out", overwrite, owned=["images", "demo.json", "train.json", "test.json", "meta.json"])
    recs = write_demo(out, cfg)
    n_test = sum(r.split == "test" for r in recs)
    typer.echo(
        f"wrote {len(recs)} images ({len(recs) - n_test} train, {n_test} test) to {out}; "
        f"use --data json:{out / 'demo.json'}"
    )


def main() -> None:
    app()  # _Group.main turns every error into one line and an exit code


if __name__ == "__main__":
    main()
