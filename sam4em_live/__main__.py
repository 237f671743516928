"""``python -m sam4em_live``: the same command line as ``sam4em-live``."""

from sam4em_live.cli import main

main()
