"""A run's images: the training and held-out records, which of them each step takes, their
degraded partners, and reading them with mid-run faults handled in one place.

Everything here is a pure function of (seed, step) and of which files are readable, so a
resumed run reads exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from .config import ConfigError, TrainConfig
from .errors import DataFault, TrainingError


@dataclass
class Dataset:
    train: list  # IQARecord
    eval: list

    @staticmethod
    def load(cfg: TrainConfig, log: Callable[[str], None]) -> Dataset:
        from .data import load_records

        def read(specs: Sequence[str]) -> list:
            records, rest = [], []
            for spec in specs:
                if spec.startswith("demo:"):  # generated on first use, no download
                    path, _, query = spec[len("demo:") :].partition("?")
                    records += _demo(path or "data/demo", query, spec)
                else:
                    rest.append(spec)
            if rest:
                res = load_records(
                    rest, on_bad=cfg.data.on_bad, check_images=cfg.data.check_images, seed=cfg.data.split_seed
                )
                log(res.format())
                records += res.records
            return records

        records = read(cfg.data.train)
        train = [r for r in records if r.split == "train"]
        held = read(cfg.data.eval) if cfg.data.eval else records
        held = [r for r in held if r.split == cfg.data.eval_split]
        if cfg.eval.max_images:
            held = held[: cfg.eval.max_images]
        if not train:
            raise ConfigError(f"data.train: no records in the train split of {list(cfg.data.train)}")
        return Dataset(train, held)


def _demo(path: str, query: str, spec: str) -> list:
    """The demo's records; `?corrupt=F&corrupt_seed=N` corrupts a fraction of its training labels."""
    from urllib.parse import parse_qsl

    from .data import demo_records
    from .data.corrupt import corrupt_from_options

    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"corrupt", "corrupt_seed"})
    if unknown:
        raise ConfigError(
            f"data.train: {spec!r}: unknown option(s) {', '.join(unknown)} (demo takes corrupt, corrupt_seed)"
        )
    try:
        return corrupt_from_options(demo_records(path), options, spec)[0]
    except ValueError as e:
        raise ConfigError(f"data.train: {e}") from None


def batch_indices(n: int, step: int, micro: int, *, batch_size: int, grad_accum: int, seed: int) -> List[int]:
    """Record indices of micro-batch `micro` of step `step`: a seeded permutation per epoch,
    consumed in order, so the data order is a pure function of (seed, step)."""
    start = (step * grad_accum + micro) * batch_size
    return [_epoch_order(n, seed, pos // n)[pos % n] for pos in range(start, start + batch_size)]


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> List[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def step_records(train: list, step: int, cfg: TrainConfig, rank: int = 0, world: int = 1) -> Tuple[list, List[int]]:
    """This rank's images of RL step `step` in slot order, and one rollout seed each. Rank r takes
    the contiguous micro-batches r*grad_accum .. (r+1)*grad_accum-1, so R ranks x batch b are the
    same images and rollout seeds as one process with batch R*b."""
    from .rollout import step_seeds

    o = cfg.optim
    records = []
    for micro in range(rank * o.grad_accum, (rank + 1) * o.grad_accum):
        idx = batch_indices(
            len(train), step, micro, batch_size=o.batch_size, grad_accum=o.grad_accum * world, seed=cfg.seed
        )
        records += [train[i] for i in idx]
    seeds = step_seeds(cfg.seed, step, len(records) * world)[rank * len(records) : (rank + 1) * len(records)]
    return records, seeds


class Partners:
    """Degraded partner of a training image: the record's `image_deg` file when it has one (and
    degradation.use_partner_files), else made on the fly, deterministic per (seed, record id)."""

    def __init__(self, cfg: TrainConfig):
        from .data.degrade import Degrader

        d = cfg.objective.perception.degradation
        self.use_files = d.use_partner_files
        self.degrader = Degrader(seed=d.seed, recipe=d.recipe())
        self.decoded: Dict[str, object] = {}  # record id -> partner already read by ImageReader

    def uses_file(self, record) -> bool:
        return bool(self.use_files and record.image_deg)

    def __call__(self, record, image):
        from .data import load_image

        if self.uses_file(record):
            decoded = self.decoded.pop(record.id, None)
            return decoded if decoded is not None else load_image(record, degraded=True)
        return self.degrader(image, record.id)


class ImageReader:
    """Every image read of a run goes through here, so a file that fails to decode mid-run
    (truncated, deleted, replaced) is handled in one place: reported with its file and the line
    that listed it, counted, and replaced in the batch by the next readable training record (a
    pure function of which files are readable, so a resume makes the same choice); with
    data.on_bad: fail the run stops with DataFault (the run loop checkpoints first)."""

    def __init__(self, cfg: TrainConfig, data: Dataset, partners: Partners, log, step: Callable[[], int]):
        self.cfg, self.data, self.partners, self.log = cfg, data, partners, log
        self.step = step  # the step a fault is reported at
        self.bad_ids: set = set()  # training records whose image failed to decode
        self.faults = 0  # data faults so far (this process)
        self._positions = {r.id: i for i, r in enumerate(data.train)}

    def load(self, records) -> tuple:
        """(records, RGB images) for a batch, unreadable records replaced."""
        out_records, out_images = [], []
        train = self.data.train
        for record in records:
            pos = self._positions.get(record.id, 0)
            for _ in range(len(train)):
                image = self.read(record)
                if image is not None:
                    break
                pos = (pos + 1) % len(train)
                record = train[pos]
            else:
                raise TrainingError("no readable training image is left (every one failed to decode; see the log)")
            out_records.append(record)
            out_images.append(image)
        return out_records, out_images

    def read(self, record):
        """The record's image (and its partner file, when the perception loss uses one), or None
        after reporting why it cannot be read."""
        from .data import load_image
        from .images import ImageReadError

        if record.id in self.bad_ids:
            return None
        try:
            image = load_image(record)
            if self.cfg.objective.perception.enabled and self.partners.uses_file(record):
                self.partners.decoded[record.id] = load_image(record, degraded=True)
            return image
        except (ImageReadError, OSError, ValueError) as e:
            self.bad_ids.add(record.id)
            self.faults += 1
            msg = f"data fault: {e}"
            self.log.write(
                {"event": "data_fault", "step": self.step(), "id": record.id, "source": record.source, "error": str(e)}
            )
            if self.cfg.data.on_bad == "fail":
                raise DataFault(f"{msg} (data.on_bad: fail)") from None
            self.log.info(f"{msg}; skipped for the rest of the run and replaced in this batch")
            return None
