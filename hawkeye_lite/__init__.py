"""hawkeye-lite: reinforcement-learned image quality assessment (Q-Hawkeye) on one GPU."""

__version__ = "0.1.0"

__all__ = ["Scorer", "__version__"]


def __getattr__(name):
    # Lazy, so `import hawkeye_lite` (and `hawkeye-lite --help`) does not import torch.
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    raise AttributeError(f"module 'hawkeye_lite' has no attribute {name!r}")
