"""The shipped prompt files (package data of `prompts`) and loading a set by path or dataset flag."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vlm.errors import VlmError
from vlm.prompts.expand import PromptSet
from vlm.prompts.schema import validate_prompt_set
from vlm.tasks import all_tasks, get_task


def prompts_dir() -> Path:
    """The folder of the shipped prompt files (the `prompts` package)."""
    return Path(str(resources.files("prompts")))


def shipped_prompt_file(flag: str) -> Path:
    """Where the shipped prompt file of dataset `flag` is (whether or not it exists)."""
    return prompts_dir() / f"{get_task(flag).flag}.yaml"


def shipped_prompt_files() -> list[Path]:
    """The shipped prompt files, in medmnist.INFO order (files for other names last, by name)."""
    order = {task.flag: i for i, task in enumerate(all_tasks())}
    return sorted(prompts_dir().glob("*.yaml"), key=lambda p: (order.get(p.stem, len(order)), p.name))


def _looks_like_path(source: str) -> bool:
    p = Path(source)
    return p.suffix.lower() in (".yaml", ".yml") or "/" in source or "\\" in source or p.is_file()


def load_prompt_set(source: str | Path, dataset: str | None = None) -> PromptSet:
    """Load and validate a prompt set from a YAML path or a dataset flag (-> the shipped file).

    With `dataset`, the file must be for that dataset (used for ``--prompts FILE`` next to a flag).
    """
    if isinstance(source, Path) or _looks_like_path(source):
        return validate_prompt_set(Path(source), dataset)
    task = get_task(source)
    if dataset is not None and get_task(dataset).flag != task.flag:
        raise VlmError(f"Prompt set '{task.flag}' was asked for dataset '{dataset}'.")
    path = shipped_prompt_file(task.flag)
    if not path.is_file():
        raise VlmError(f"No shipped prompt file for {task.flag} (expected {path}); pass a YAML file instead.")
    return validate_prompt_set(path, task.flag)
