"""hawkeye-lite: reinforcement-learned image quality assessment (Q-Hawkeye) on one GPU."""

__version__ = "0.1.0"
