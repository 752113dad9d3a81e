"""What every `vlm` command shares: the click group that turns user errors into one line and exit
code 2, help reflowing, the common options and `command`, which makes a function that returns an
`Output` a command with --format/--json and option groups."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.markup import escape
from typer.core import TyperGroup

from vlm.commands.output import FormatOpt, JsonOpt, Output, emit, err, resolve_format
from vlm.errors import VlmError

try:  # typer 0.2x vendors its own click
    from typer._click import exceptions as click_errors
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors  # type: ignore[no-redef]
    from click import get_current_context  # type: ignore[no-redef]


def reflow(text: str | None) -> str | None:
    """Join the hard-wrapped lines of each help paragraph (rich would keep the breaks and wrap
    raggedly); a line that starts an example or a list item stays on its own line."""
    if not text:
        return text
    paragraphs = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in para.split("\n"):
            if lines and not line.startswith(("Example", "- ", "* ", " ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def flags_as_flags(cmd: Any, ctx: Any) -> None:
    """Boolean flags (--json, --dry-run, --help, ...) show no `<bool>` value in help: typer's rich help gives
    every option its type unless it has a metavar, so flags get an empty one."""
    for param in [*cmd.params, cmd.get_help_option(ctx)]:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""


class VlmGroup(TyperGroup):
    """Runs a command and turns user errors into one stderr line and exit code 2; reflows help."""

    def get_command(self, ctx, cmd_name):  # type: ignore[override]
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            cmd.help = reflow(cmd.help)
            flags_as_flags(cmd, ctx)
        return cmd

    def format_help(self, ctx, formatter):  # type: ignore[override]
        self.help = reflow(self.help)
        flags_as_flags(self, ctx)
        return super().format_help(ctx, formatter)

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click_errors.UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx):  # type: ignore[override]
        from models.errors import ModelError

        try:
            with one_line_warnings():
                return super().invoke(ctx)
        except click_errors.UsageError as exc:
            _usage_error(exc)
        except (VlmError, ModelError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Python warnings (a discarded cache entry, a random-initialised model, ...) as one stderr line each."""
    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        err.print(f"[yellow]warning:[/] {escape(' '.join(str(message).split()))}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _usage_error(exc: click_errors.UsageError) -> None:
    """A command-line usage error (unknown option, a value that is not a number, ...) as one stderr line, exit 2;
    a group called without a command shows its help as click does."""
    if isinstance(exc, getattr(click_errors, "NoArgsIsHelpError", ())):
        raise exc
    where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
    message = " ".join(exc.format_message().split())
    err.print(f"[bold red]error:[/] {escape(message)}{escape(where)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def check_ranges(values: dict[str, Any]) -> None:
    """Every given numeric option that has a range (`vlm.ranges`), named as the command line spells it, before
    any work (options typed as text, such as `--shots 1 2 all`, are checked where the command reads them)."""
    from vlm.ranges import RANGES, check_options

    numbers = {k: v for k, v in values.items() if k in RANGES and _numeric(v)}
    if numbers:
        ctx = get_current_context(silent=True)
        flags = {p.name: p.opts[0] for p in ctx.command.params if p.opts} if ctx is not None else {}
        check_options(numbers, flags)


def _numeric(value: Any) -> bool:
    items = value if isinstance(value, (list, tuple)) else [value]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)


def command(func: Callable[..., Output | None]) -> Callable[..., None]:
    """A `vlm` command from a function that returns an `Output` (None: nothing to show).

    The command gets --format (unless the function places `fmt: FormatOpt` itself, and then it
    receives the resolved format) and --json, an alias of --format json, as its last options. A
    parameter typed with an option-group dataclass stands for that group's options, in place, and
    receives them as one instance. The format is checked before the work starts and `emit` prints
    what the function returns.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    groups: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for p in inspect.signature(func).parameters.values():
        kind = hints.get(p.name, p.annotation)
        if dataclasses.is_dataclass(kind):
            groups[p.name] = kind
            group_hints = typing.get_type_hints(kind, include_extras=True)
            params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                         annotation=group_hints[f.name]) for f in dataclasses.fields(kind)]
        else:
            params.append(p.replace(annotation=kind))
    takes_fmt = "fmt" in hints
    keyword = inspect.Parameter.KEYWORD_ONLY
    if not takes_fmt:
        params.append(inspect.Parameter("fmt", keyword, default="table", annotation=FormatOpt))
    params.append(inspect.Parameter("as_json", keyword, default=False, annotation=JsonOpt))

    @functools.wraps(func)
    def run(**kwargs: Any) -> None:
        fmt = resolve_format(kwargs.pop("fmt"), kwargs.pop("as_json"))
        check_ranges(kwargs)
        for name, kind in groups.items():
            kwargs[name] = kind(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(kind)})
        emit(func(**kwargs, fmt=fmt) if takes_fmt else func(**kwargs), fmt)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (typer passes None for the others)."""
    return {k: v for k, v in options.items() if v is not None}


DataRootOpt = Annotated[
    Optional[Path],
    typer.Option("--data-root", help="Folder with MedMNIST .npz files \\[default: $VLM_DATA_ROOT, else ~/.medmnist].",
                 show_default=False),
]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download missing dataset files from Zenodo (MD5-checked).")]
VerifyOpt = Annotated[bool, typer.Option("--verify", help="Check the dataset file's MD5 against medmnist.INFO.")]
SizeOpt = Annotated[int, typer.Option("--size", help="Image size of the dataset file: 28/64/128/224 (2D), 28/64 (3D).")]
SplitOpt = Annotated[str, typer.Option("--split", help="Split to score: train, val or test.")]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds run records (one sub-folder per run).")]


def seed_opt(what: str) -> Any:
    """`--seed` with help that says what it seeds in this command (`seed: seed_opt("the bootstrap") = 0`)."""
    return Annotated[int, typer.Option("--seed", help=f"Random seed of {what}.")]


def split_opt(help: str) -> Any:
    """`--split` with this command's help (SplitOpt: the split a command scores)."""
    return Annotated[str, typer.Option("--split", help=help)]


BootstrapOpt = Annotated[int, typer.Option("--bootstrap", help="Bootstrap rounds for 95% confidence intervals (0: none).")]
FlagArg = Annotated[str, typer.Argument(help="Dataset flag, e.g. breastmnist or vesselmnist3d (see `vlm datasets`).")]
CacheDirOpt = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Image-embedding cache folder (default: $VLM_CACHE_DIR, else ~/.cache/medvlm/embeddings).",
    show_default=False)]
