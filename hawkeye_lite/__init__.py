"""hawkeye-lite: reinforcement-learned image quality assessment (Q-Hawkeye) on one GPU."""

__version__ = "0.1.0"

__all__ = ["HawkeyeMetric", "Scorer", "__version__", "create_metric"]


def __getattr__(name):
    # Lazy, so `import hawkeye_lite` (and `hawkeye-lite --help`) does not import torch.
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    if name in ("create_metric", "HawkeyeMetric"):
        from . import metric

        return getattr(metric, name)
    raise AttributeError(f"module 'hawkeye_lite' has no attribute {name!r}")
