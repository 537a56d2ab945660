"""`python -m hawkeye_lite ...` (what `torchrun -m hawkeye_lite train ...` runs): the CLI."""

from hawkeye_lite.cli import main

if __name__ == "__main__":
    main()
