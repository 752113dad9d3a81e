"""`vlm run`: experiment files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from vlm.commands.common import CacheDirOpt, DataRootOpt, command
from vlm.commands.output import FormatOpt, Line, Output, status_console


@command
def run_cmd(
    experiment: Annotated[Path, typer.Argument(help="Experiment file (YAML): datasets x methods x seeds; "
                                                     "see experiments/*.yaml.", show_default=False)],
    runs_dir: Annotated[Optional[Path], typer.Option(
        "--runs-dir", help="Where the runs go \\[default: the file's runs_dir, else runs/<experiment name>].",
        show_default=False)] = None,
    data_root: DataRootOpt = None,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="auto, cpu or cuda \\[default: the file's device, else auto].", show_default=False)] = None,
    cache_dir: CacheDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the jobs still to run and stop.")] = False,
    fmt: FormatOpt = "table",
) -> Output:
    """Run every job of an experiment file that has no finished record yet.

    A job is (method, dataset, size, seed); its key is stored in each record, so an interrupted
    matrix resumes where it stopped. Afterwards: `vlm compare RUNS_DIR --baselines medmnist`.

    Example: [bold]vlm run experiments/breast_vessel.yaml --data-root ../shared/data/medmnist[/]
    """
    from vlm.experiments import load_experiment, pending_jobs, run_job

    exp = load_experiment(experiment)
    folder = runs_dir or exp.runs_dir or Path("runs") / exp.name
    root = data_root or exp.data_root
    jobs = exp.jobs()
    todo = pending_jobs(exp, folder)
    summary = {"experiment": exp.name, "runs_dir": str(folder), "jobs": len(jobs), "skipped": len(jobs) - len(todo),
               "ran": [] if dry_run else [j.label for j in todo], "pending": [j.label for j in todo] if dry_run else []}
    if not dry_run and todo:
        from vlm.commands.progress import job_progress

        console = status_console(fmt)
        console.print(f"{exp.name}: {len(todo)} of {len(jobs)} jobs to run ({len(jobs) - len(todo)} already finished) "
                      f"-> {folder}", highlight=False)
        with job_progress(console) as bar:
            overall = bar.add_task("experiment", total=len(todo))
            for job in todo:
                bar.update(overall, description=escape(job.label))
                run_job(job, runs_dir=folder, data_root=root, device=device or exp.device, cache_dir=cache_dir)
                bar.advance(overall)
    verb = "to run" if dry_run else "ran"
    listed = summary["pending"] if dry_run else summary["ran"]
    blocks = [Line(f"{escape(exp.name)}: {len(jobs)} jobs, {summary['skipped']} already finished, {len(listed)} {verb}"
                   + "".join(f"\n  {escape(label)}" for label in listed))]
    if not dry_run:
        blocks.append(Line(f"compare: [bold]vlm compare {escape(str(folder))} --baselines medmnist[/]"))
    return Output(summary, blocks)
