"""The `vlm` command groups, one module each; `cli.py` assembles them into the app."""
