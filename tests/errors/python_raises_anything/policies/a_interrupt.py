"""A policy file that raises KeyboardInterrupt: reported at its line, not a Ctrl-C."""

raise KeyboardInterrupt
