"""The README.md model card of a saved adapter (RUN/final and every checkpoint), in the layout
PEFT and TRL write: a YAML metadata block the Hub reads (base_model, library_name, tags,
pipeline_tag), then what was trained, on what, how it scored, and how to load it.

Written from what the run already has: the resolved TrainConfig, the adapter's base folder and
the eval records of RUN/metrics.jsonl. It replaces the placeholder card PEFT's save_pretrained
leaves ("# Model Card for Model ID ... [More Information Needed]").
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import List, Optional

CARD = "README.md"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.fullmatch(name)) and not Path(name).exists()


def eval_records(run_dir: Path) -> List[dict]:
    """The run's eval records so far (metrics.jsonl), oldest first; [] without a log."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("event") == "eval" and rec.get("datasets"):
            out.append(rec)
    return out


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "n/a"


def _eval_table(evals: List[dict]) -> str:
    if not evals:
        return "No held-out evaluation was run (eval.before / eval.after / eval.every are off)."
    lines = [
        "| when | step | dataset | images | SRCC | PLCC | PLCC (logistic) | KRCC | RMSE | parse rate |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ev in evals:
        for name, d in ev["datasets"].items():
            lines.append(
                f"| {ev.get('tag', '')} | {ev.get('step', '')} | {name} | {d.get('n', '')} | {_f(d.get('srcc'))} "
                f"| {_f(d.get('plcc'))} | {_f(d.get('plcc_fit'))} | {_f(d.get('krcc'))} | {_f(d.get('rmse'))} "
                f"| {_f(d.get('parse_rate'))} |"
            )
    return "\n".join(lines)


# What the warm start taught, by sft.target.
_WARM_KIND = {
    "mos": "supervised",
    "format": "label-free (the answer format with random ratings)",
    "describe": "label-free (a description and a random rating)",
}


def render_model_card(
    cfg,
    *,
    base: str,
    step: int,
    total_steps: Optional[int] = None,
    evals: List[dict] = (),
    kind: str = "final",
    repo_id: Optional[str] = None,
    location: Optional[str] = None,
) -> str:
    """Markdown text of the card. `cfg`: the run's TrainConfig; `base`: the folder or hub id the
    adapter applies to (RUN/sft-base after a warm start); `kind`: "final" or "checkpoint";
    `repo_id` / `location`: what the load snippets name (the hub repo, else the folder)."""
    m, lora, o, obj, r = cfg.model, cfg.model.lora, cfg.optim, cfg.objective, cfg.rollout
    p = obj.perception
    original = m.name_or_path
    base_is_hub = _is_hub_id(base)
    meta_base = base if base_is_hub else (original if _is_hub_id(original) else None)
    tags = ["hawkeye-lite", "image-quality-assessment", "iqa", "q-hawkeye", "grpo", "lora", "peft", "qwen2.5-vl"]
    if meta_base:
        tags.append(f"base_model:adapter:{meta_base}")
    front = ["---"]
    if meta_base:
        front.append(f"base_model: {meta_base}")
    front += ["library_name: peft", "pipeline_tag: image-text-to-text", "license: apache-2.0", "tags:"]
    front += [f"- {t}" for t in tags]
    front.append("---")

    name = repo_id or "hawkeye-lite adapter"
    warm = cfg.sft.steps > 0
    where = "this run's `final/`" if kind == "final" else f"checkpoint `step-{step:06d}`"
    base_note = f"`{base}`" + (
        f", which is `{original}` after {cfg.sft.steps} {_WARM_KIND.get(cfg.sft.target, '')} warm-start steps, merged "
        "(the adapter applies to that merged model, not to the original one)"
        if warm
        else ""
    )
    load_base = base if base_is_hub else "PATH/TO/" + Path(base).name
    subject = repo_id or location or ("RUN/final" if kind == "final" else f"RUN/checkpoints/step-{step:06d}")

    lines = front + [
        f"# {name}",
        "",
        f"A LoRA adapter that rates image quality on a 1-5 scale, trained with "
        f"hawkeye-lite using the Q-Hawkeye method: uncertainty-aware GRPO plus the "
        f"implicit perception loss. This card describes {where}"
        + (f" (RL step {step} of {total_steps})." if total_steps else f" (RL step {step})."),
        "",
        "## Model",
        "",
        f"- **Base model:** {base_note}",
        f"- **Quantization during training:** {m.quantization} (dtype {m.dtype})",
        f"- **Adapter:** LoRA r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}; language-model modules "
        f"{', '.join(lora.target_modules)}"
        + (f"; vision modules {', '.join(lora.vision_target_modules)}" if lora.vision else "; vision tower frozen"),
        f"- **Prompt:** `{r.prompt}` (hawkeye_lite.prompts); answers end in `<answer>score</answer>`",
        f"- **Completion cap:** {r.max_new_tokens} new tokens",
        "",
        "## Training data",
        "",
        f"- **Train:** {', '.join(f'`{s}`' for s in cfg.data.train)}",
        f"- **Held-out:** {', '.join(f'`{s}`' for s in cfg.data.eval) if cfg.data.eval else 'the ' + cfg.data.eval_split + ' split of the training specs'}",
        "",
        "## Method settings",
        "",
        "| setting | value |",
        "|---|---|",
        f"| warm start (SFT) | {cfg.sft.steps} steps, lr {cfg.sft.lr:g}, batch {cfg.sft.batch_size} |",
        f"| RL steps | {total_steps if total_steps is not None else o.max_steps} (batch {o.batch_size} images x G={r.num_generations}, accum {o.grad_accum}, mu {o.mu}) |",
        f"| optimizer | {o.optimizer}, lr {o.lr:g} ({o.schedule}, warmup {o.warmup_steps}), betas {tuple(o.betas)}, weight decay {o.weight_decay:g} |",
        f"| loss | {obj.loss_type}, beta {obj.beta:g}, eps {obj.eps_low:g}/{obj.eps_high:g} |",
        f"| uncertainty weighting | {'on' if obj.use_uncertainty else 'off'}, alpha {obj.alpha:g} |",
        f"| perception loss | {'on' if p.enabled else 'off'}, gamma0 {p.gamma0:g} (cosine to 0 at epoch {p.kl_zero_epoch:g}), eta1 {p.eta1:g}, eta2 {p.eta2:g} |",
        f"| rewards | {', '.join(cfg.reward.functions)} (tau {cfg.reward.tau:g}) |",
        f"| sampling | temperature {r.temperature:g}, top_p {r.top_p:g}, top_k {r.top_k} |",
        f"| seed | {cfg.seed} |",
        "",
        "The full resolved configuration is `config.yaml` next to this card.",
        "",
        "## Evaluation",
        "",
        "Held-out metrics logged by the run (SRCC / PLCC over the mean of "
        f"{cfg.eval.samples} sampled ratings per image; PLCC (logistic) after the 4-parameter logistic fit):",
        "",
        _eval_table(list(evals)),
        "",
        "## How to use",
        "",
        "With hawkeye-lite (reads the prompt and completion cap this adapter was trained with from `hawkeye.json`):",
        "",
        "```python",
        "from hawkeye_lite import Scorer",
        "",
        f'scorer = Scorer.from_pretrained("{subject}")',
        'result = scorer.score(["image.jpg"], samples=8)[0]',
        "print(result.score, result.std)  # mean rating in [1, 5] and its spread",
        "```",
        "",
        f"or `hawkeye-lite score --model {subject} image.jpg`.",
        "",
        "With plain `peft` + `transformers` (the prompt is `hawkeye_lite.prompts.chat_text`):",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        f'base = AutoModelForImageTextToText.from_pretrained("{load_base}", torch_dtype="auto")',
        f'model = PeftModel.from_pretrained(base, "{subject}")',
        f'processor = AutoProcessor.from_pretrained("{subject}")',
        "```",
        "",
    ]
    if not base_is_hub:
        lines += [
            f"The base `{load_base}` is a local folder (`{Path(base).name}/` of the training run): "
            "ship it with the adapter, or merge the adapter into it (`model.merge_and_unload()`).",
            "",
        ]
    return "\n".join(lines)


def write_model_card(
    out_dir: Path,
    cfg,
    *,
    base: str,
    step: int,
    total_steps: Optional[int] = None,
    run_dir: Optional[Path] = None,
    kind: str = "final",
    repo_id: Optional[str] = None,
) -> Path:
    out_dir = Path(out_dir)
    location = None
    if run_dir is not None:  # out is written under a temporary name, then renamed to this
        location = str(Path(run_dir) / ("final" if kind == "final" else f"checkpoints/step-{step:06d}"))
    text = render_model_card(
        cfg,
        base=base,
        step=step,
        total_steps=total_steps,
        evals=eval_records(run_dir) if run_dir is not None else [],
        kind=kind,
        repo_id=repo_id,
        location=location,
    )
    path = out_dir / CARD
    path.write_text(text, encoding="utf-8")
    return path
