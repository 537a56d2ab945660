"""Evaluation: score records with any scoring callable, report the field's metrics per dataset.

The core (`evaluate`) takes records and a function `paths -> predictions`, so it is tested
without a model; `scorer_fn` adapts the package's Scorer to that shape for `hawkeye-lite eval`.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from .data import IQARecord
from .fsio import removed_on_failure as _removed_on_failure
from .fsio import writing
from .metrics import IQAMetrics, compute_metrics

NAN = float("nan")


@dataclass
class Prediction:
    score: float = NAN  # NaN when no sample parsed
    std: float = NAN  # spread of the K samples
    n_parsed: int = 0  # samples whose answer parsed
    n_samples: int = 1  # samples drawn
    text: str = ""  # first completion, for inspection
    error: Optional[str] = None  # the image could not be read (counted, excluded from the metrics)


def as_prediction(obj: object) -> Prediction:
    """Accept a Prediction, a Scorer result (score/std/samples/texts/n_parsed), a number or None."""
    if isinstance(obj, Prediction):
        return obj
    if obj is None:
        return Prediction()
    if isinstance(obj, (int, float)):
        s = float(obj)
        return Prediction(s, NAN, int(math.isfinite(s)), 1)
    score = getattr(obj, "score", None)
    score = NAN if score is None else float(score)
    std = getattr(obj, "std", None)
    texts = getattr(obj, "texts", None)
    samples = getattr(obj, "samples", None)
    n_samples = len(texts) if texts else (len(samples) if samples else 1)
    n_parsed = getattr(obj, "n_parsed", None)
    if n_parsed is None:
        n_parsed = (
            sum(1 for v in (samples or []) if v is not None and math.isfinite(v))
            if samples
            else int(math.isfinite(score))
        )
    text = (texts[0] if texts else getattr(obj, "text", "")) or ""
    error = None if getattr(obj, "ok", True) else (getattr(obj, "error", None) or "unreadable image")
    return Prediction(
        score, NAN if std is None else float(std), int(n_parsed), int(max(n_samples, 1)), str(text), error
    )


ScoreFn = Callable[[List[str]], Sequence[object]]


@dataclass
class DatasetReport:
    dataset: str
    metrics: IQAMetrics
    n_images: int
    seconds: float
    sample_parse_rate: float  # parsed samples / samples drawn
    n_failed: int = 0  # images that could not be read (not scored, not in the metrics)

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else NAN

    def to_dict(self) -> dict:
        d = {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "seconds": round(self.seconds, 3),
            "images_per_s": self.images_per_s,
            "sample_parse_rate": self.sample_parse_rate,
            "n_failed": self.n_failed,
        }
        d.update(self.metrics.to_dict())
        return d


@dataclass
class EvalReport:
    datasets: List[DatasetReport]
    rows: List[tuple] = field(default_factory=list)  # (record, Prediction)

    def to_dict(self) -> dict:
        """JSON-ready: undefined metrics (NaN) become null, as strict JSON has no NaN."""

        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        return clean({"datasets": [d.to_dict() for d in self.datasets]})

    def table(self) -> str:
        head = f"{'dataset':<14}{'n':>6}{'SRCC':>8}{'PLCC':>8}{'PLCC-fit':>10}{'KRCC':>8}{'RMSE':>8}{'parse':>8}{'img/s':>10}"
        lines = [head, "-" * len(head)]

        def f(v: float, w: int = 8) -> str:
            return f"{v:>{w}.4f}" if isinstance(v, float) and math.isfinite(v) else f"{'n/a':>{w}}"

        for d in self.datasets:
            m = d.metrics
            lines.append(
                f"{d.dataset[:13]:<14}{d.n_images:>6}{f(m.srcc)}{f(m.plcc)}{f(m.plcc_fit, 10)}{f(m.krcc)}"
                f"{f(m.rmse)}{d.sample_parse_rate:>8.1%}{d.images_per_s:>10.1f}"
            )
        for d in self.datasets:
            if d.n_failed:
                lines.append(f"note [{d.dataset}]: {d.n_failed} image(s) could not be read and are not in the metrics")
            for note in d.metrics.notes:
                lines.append(f"note [{d.dataset}]: {note}")
        return "\n".join(lines)

    def write_csv(self, path: Union[str, Path]) -> Path:
        import os

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # atomic: never half a file under the name
        with writing(path), _removed_on_failure(tmp), open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(
                ["dataset", "id", "image", "split", "mos", "pred", "pred_std", "n_parsed", "n_samples", "text", "error"]
            )
            for rec, p in self.rows:
                w.writerow(
                    [
                        rec.dataset,
                        rec.id,
                        rec.image,
                        rec.split,
                        f"{rec.mos:.6f}",
                        "" if not math.isfinite(p.score) else f"{p.score:.6f}",
                        "" if not math.isfinite(p.std) else f"{p.std:.6f}",
                        p.n_parsed,
                        p.n_samples,
                        p.text,
                        p.error or "",
                    ]
                )
        with writing(path):
            os.replace(tmp, path)
        return path


def evaluate(
    records: Sequence[IQARecord],
    score_fn: ScoreFn,
    *,
    batch_size: int = 8,
    progress: Optional[Callable[[int, int], None]] = None,
) -> EvalReport:
    """Score every record (in batches, dataset by dataset) and compute the metrics per dataset.

    A score_fn that raises is not caught: a broken model should stop the evaluation loudly. A
    prediction that did not parse (NaN/None) is counted and excluded from the correlations.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    by_ds: Dict[str, List[IQARecord]] = {}
    for r in records:
        by_ds.setdefault(r.dataset, []).append(r)
    reports, rows, done = [], [], 0
    for name, recs in by_ds.items():
        preds: List[Prediction] = []
        t0 = time.perf_counter()
        for i in range(0, len(recs), batch_size):
            chunk = recs[i : i + batch_size]
            out = list(score_fn([r.image for r in chunk]))
            if len(out) != len(chunk):
                raise RuntimeError(f"scoring function returned {len(out)} results for {len(chunk)} images")
            preds.extend(as_prediction(o) for o in out)
            done += len(chunk)
            if progress:
                progress(done, len(records))
        seconds = time.perf_counter() - t0
        metrics = compute_metrics([p.score for p in preds], [r.mos for r in recs])
        drawn = sum(p.n_samples for p in preds if p.error is None)
        reports.append(
            DatasetReport(
                name,
                metrics,
                len(recs),
                seconds,
                sum(p.n_parsed for p in preds) / drawn if drawn else NAN,
                sum(p.error is not None for p in preds),
            )
        )
        rows.extend(zip(recs, preds))
    return EvalReport(reports, rows)


def scorer_fn(
    scorer,
    *,
    samples: Optional[int] = None,
    temperature: Optional[float] = None,
    max_new_tokens: Optional[int] = None,
    seed: int = 0,
    stratified: bool = False,
) -> ScoreFn:
    """Adapt `Scorer.score(images, *, samples, temperature, seed, ...)` to the ScoreFn shape.

    Every call passes the same seed: the Scorer draws each image's samples from a stream of its
    own (seed + the image's content), so a prediction does not depend on the batch it is in, on
    the batch size or on the record order. An image that cannot be read (deleted or damaged
    since loading) is reported and counted, not fatal: the other images keep their scores.
    """
    kwargs: dict = {}
    if samples is not None:
        kwargs["samples"] = samples
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    if stratified:
        kwargs["stratified"] = True

    def fn(paths: List[str]) -> Sequence[object]:
        return scorer.score(list(paths), seed=seed, batch_size=max(1, len(paths)), on_error="skip", **kwargs)

    return fn
