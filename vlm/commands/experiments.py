"""`vlm run`: experiment files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
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
    workers: Annotated[Optional[int], typer.Option(
        "--workers", help="Jobs at once: N worker processes here (one GPU each when there are GPUs, else the CPU "
                          "cores shared), or N tasks of --launcher local \\[default: the file's launch.workers, "
                          "else 1].", show_default=False)] = None,
    launcher: Annotated[Optional[str], typer.Option(
        "--launcher", help="Run the jobs through submitit: slurm (a job array) or local.", show_default=False)] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", help="SLURM partition.", show_default=False)] = None,
    gpus_per_job: Annotated[Optional[int], typer.Option(
        "--gpus-per-job", help="GPUs per SLURM task \\[default: 1].", show_default=False)] = None,
    time_limit: Annotated[Optional[int], typer.Option(
        "--time", help="Minutes per job (the SLURM time limit) \\[default: 60].", show_default=False)] = None,
    array_parallelism: Annotated[Optional[int], typer.Option(
        "--array-parallelism", help="SLURM array tasks at once \\[default: 16].", show_default=False)] = None,
    fmt: FormatOpt = "table",
) -> Output:
    """Run every job of an experiment file that has no finished record yet.

    A job is (method, dataset, size, seed); its key is stored in each record, so an interrupted
    matrix resumes where it stopped. Afterwards: `vlm compare RUNS_DIR --baselines medmnist`.

    Jobs are claimed through files in RUNS_DIR/.claims, so workers and separate `vlm run` calls never run
    a job twice, and a job whose worker died runs again (resuming its last.pt). A failed job does not
    stop the others; its log is in RUNS_DIR/logs and the exit code is 1.

    Example: [bold]vlm run experiments/quick.yaml --data-root ../shared/data/medmnist --workers 2[/]
    """
    from vlm.experiments import load_experiment, pending_jobs

    exp = load_experiment(experiment)
    settings = exp.launch.merged(workers=workers, launcher=launcher, partition=partition, gpus_per_job=gpus_per_job,
                                 time=time_limit, array_parallelism=array_parallelism)
    folder = runs_dir or exp.runs_dir or Path("runs") / exp.name
    root = data_root or exp.data_root
    jobs = exp.jobs()
    todo = pending_jobs(exp, folder)
    summary = {"experiment": exp.name, "runs_dir": str(folder), "jobs": len(jobs), "skipped": len(jobs) - len(todo),
               "ran": [], "pending": [j.label for j in todo] if dry_run else [], "failed": [], "left": [],
               "problems": []}
    if not dry_run and todo:
        status = _run_with_progress(exp, todo, folder, status_console(fmt), data_root=root, device=device or exp.device,
                                    cache_dir=cache_dir, settings=settings)
        summary.update(ran=status.done, left=status.left, problems=status.problems,
                       failed=[{"job": f.job, "log": f.log, "error": f.error} for f in status.failed])
    verb = "to run" if dry_run else "ran"
    listed = summary["pending"] if dry_run else summary["ran"]
    blocks = [Line(f"{escape(exp.name)}: {len(jobs)} jobs, {summary['skipped']} already finished, {len(listed)} {verb}"
                   + "".join(f"\n  {escape(label)}" for label in listed))]
    blocks += [Line(f"[red]failed[/] {escape(f['job'])}: {escape(str(f['error']))}\n  log: {escape(str(f['log']))}")
               for f in summary["failed"]]
    blocks += [Line(f"[yellow]not run[/] {escape(label)} (its worker stopped; `vlm run` again continues it)")
               for label in summary["left"]]
    blocks += [Line(f"[red]launcher[/] {escape(problem)}") for problem in summary["problems"]]
    if not dry_run:
        comparison = _comparison(exp, folder)
        if comparison is not None:
            summary["comparison"] = comparison.data
            blocks += comparison.blocks
        blocks.append(Line(f"compare: [bold]vlm compare {escape(str(folder))} --baselines medmnist[/]"))
    return Output(summary, blocks, exit_code=1 if summary["failed"] or summary["left"] else 0)


def _run_with_progress(exp: Any, todo: list, folder: Path, console: Console, **run: Any) -> Any:
    """Run the matrix with its progress on `console`: each job's epochs and encodings, the overall ETA."""
    from vlm.commands.progress import StatusDisplay, matrix_lines
    from vlm.launch import run_matrix
    from vlm.matrix_progress import MatrixProgress

    jobs = exp.jobs()
    console.print(f"{exp.name}: {len(todo)} of {len(jobs)} jobs to run ({len(jobs) - len(todo)} already finished) "
                  f"-> {folder}", markup=False, highlight=False, soft_wrap=not console.is_terminal)
    workers = run["settings"].workers if run["settings"].launcher != "slurm" else len(todo)
    tracker = MatrixProgress(folder, [(job.key, job.label) for job in todo], workers=workers)
    with StatusDisplay(console, lambda width: matrix_lines(tracker, width)) as display:
        def show(status: Any) -> None:
            display.print_lines(tracker.update(done=status.done, failed={f.job: f.error for f in status.failed}))

        _, status = run_matrix(exp, runs_dir=folder, on_status=show, **run)
    return status


def _comparison(exp: Any, folder: Path) -> Output | None:
    """The comparison table (`vlm compare`) of the experiment's finished jobs in `folder`, None if none."""
    from vlm.commands.compare import comparison_output
    from vlm.compare import comparison_table
    from vlm.experiments import JOB_KEY
    from vlm.results import load_runs

    keys = {job.key for job in exp.jobs()}
    records = [r for r in load_runs(folder) if str(r.config.get(JOB_KEY, "")).split("/")[0] in keys] \
        if folder.is_dir() else []
    if not records:
        return None
    return comparison_output(comparison_table(records), title=f"{exp.name}: test results in {folder}")
