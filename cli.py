"""`vlm`: the medvlm command line (typer + rich). Parses options, calls the library, renders.

Each command group lives in its own module of `vlm.commands`; this file assembles them, in the order
`vlm --help` lists them. Commands return data that `vlm.commands.output` renders: every command takes
`--format table|markdown|csv|json` and `--json` (one JSON object on stdout, nothing else).
Problems the user can fix print one line on stderr and exit with code 2 (`vlm.commands.common.VlmGroup`).
"""

from __future__ import annotations

import typer

from vlm.commands import calibrate, compare, data, experiments, fewshot, plot, prompts, report, robustness, training
from vlm.commands import zeroshot
from vlm.commands.common import VlmGroup

app = typer.Typer(
    cls=VlmGroup,
    name="vlm",
    help="Medical image classification on MedMNIST: zero-shot VLMs, fine-tuning and transfer learning, one evaluator."
         "\n\nExample: [bold]vlm run experiments/quick.yaml --data-root ../shared/data/medmnist[/]",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
app.add_typer(data.datasets_app, name="datasets")
app.command("evaluate")(data.evaluate_cmd)
app.add_typer(prompts.prompts_app, name="prompts")
app.command("zero-shot")(zeroshot.zero_shot_cmd)
app.command("compare")(compare.compare_cmd)
app.command("calibrate")(calibrate.calibrate_cmd)
app.command("robustness")(robustness.robustness_cmd)
app.add_typer(plot.plot_app, name="plot")
app.command("report")(report.report_cmd)
app.command("train")(training.train_cmd)
app.command("finetune")(training.finetune_cmd)
app.command("models")(training.models_cmd)
app.command("fewshot", cls=fewshot.FewShotCommand)(fewshot.fewshot_cmd)
app.command("run")(experiments.run_cmd)

if __name__ == "__main__":
    app()
