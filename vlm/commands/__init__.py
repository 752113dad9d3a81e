"""The `vlm` command groups, one module each; `cli.py` assembles them into the app.

Commands return data (`output.Output`: the JSON object plus table specs and lines) and the one
renderer in `output` prints it as a rich table, JSON, Markdown or CSV; `common.command` gives every
command --format/--json and expands option groups (dataclasses of options declared once).
"""
