"""Find the release's model-states file: a file, a folder (repository, ``ckpt_model`` or step) or a Hub id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MODEL_STATES_FILE = "mp_rank_00_model_states.pt"

_STEP_DIR = re.compile(r"global_step(\d+)")
_OPTIMIZER_STATES = re.compile(r".*_optim_states\.pt")
_MODEL_STATES = re.compile(r"mp_rank_\d+_model_states\.pt")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_HUB_MODEL_STATES = re.compile(r"(?:.*/)?global_step(\d+)/" + re.escape(MODEL_STATES_FILE))


@dataclass(frozen=True)
class SourceCheckpoint:
    """The model-states file to read, the training step it belongs to, and how it was chosen."""

    path: Path
    step: int | None
    note: str | None = None


def locate_checkpoint(checkpoint: str, step: int | None = None) -> SourceCheckpoint:
    """Find ``mp_rank_00_model_states.pt`` from a file, a folder (repository, ``ckpt_model`` or step) or a Hub id.

    Without ``step``, a folder with several ``global_step*`` folders gives the highest step (said
    in ``note``); with it, that step must exist.
    """
    path = Path(checkpoint).expanduser()
    if path.is_file():
        if step is not None:
            raise ValueError("--step chooses among global_step* folders: pass the checkpoint folder, not a file")
        _check_model_states_name(path)
        match = _STEP_DIR.fullmatch(path.parent.name)
        return SourceCheckpoint(path, int(match.group(1)) if match else None)
    if path.is_dir():
        return _locate_in_folder(path, step)
    if _HUB_ID.fullmatch(checkpoint):
        return _download_from_hub(checkpoint, step)
    raise ValueError(f"{checkpoint} is neither a file, a folder nor a Hub repository id (owner/name)")


def _check_model_states_name(path: Path) -> None:
    if _OPTIMIZER_STATES.fullmatch(path.name):
        raise ValueError(f"{path} holds optimiser states; pass {MODEL_STATES_FILE} or the folder holding it")
    if path.name != MODEL_STATES_FILE:
        raise ValueError(f"{path} is not a DeepSpeed model-states file: expected a file named {MODEL_STATES_FILE}")


def _locate_in_folder(folder: Path, step: int | None) -> SourceCheckpoint:
    if (folder / "ckpt_model").is_dir():
        folder = folder / "ckpt_model"
    steps = {int(m.group(1)): p for p in folder.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))}
    chosen, note = None, None
    if steps:
        chosen, note = _choose_step(sorted(steps), step, str(folder))
        folder = steps[chosen]
    elif step is not None:
        raise ValueError(f"--step {step} was given but {folder} has no global_step* folders")
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if MODEL_STATES_FILE not in names:
        raise ValueError(f"no {MODEL_STATES_FILE} and no global_step* folder in {folder}: wrong folder?")
    unknown = [name for name in names if name != MODEL_STATES_FILE and not _OPTIMIZER_STATES.fullmatch(name)]
    if unknown:
        parallel = any(map(_MODEL_STATES.fullmatch, unknown))
        extra = " (a model-parallel checkpoint, which the release is not)" if parallel else ""
        raise ValueError(
            f"unexpected file(s) in {folder}: {', '.join(unknown)}{extra}; the release has only "
            f"{MODEL_STATES_FILE} and optimiser shards there"
        )
    return SourceCheckpoint(folder / MODEL_STATES_FILE, chosen, note)


def _choose_step(available: list[int], step: int | None, where: str) -> tuple[int, str | None]:
    if step is not None:
        if step not in available:
            raise ValueError(f"no global_step{step} in {where}; available steps: {', '.join(map(str, available))}")
        return step, None
    if len(available) == 1:
        return available[0], None
    latest = available[-1]
    return latest, f"using global_step{latest}, the latest of {len(available)} steps (--step picks another)"


def _download_from_hub(repo_id: str, step: int | None) -> SourceCheckpoint:
    """Download only the model-states file of the chosen step (not the optimiser shards)."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        files = HfApi().list_repo_files(repo_id)
        candidates = {int(m.group(1)): name for name in files if (m := _HUB_MODEL_STATES.fullmatch(name))}
        if not candidates:
            raise ValueError(f"the Hub repository {repo_id} has no global_step*/{MODEL_STATES_FILE}")
        chosen, note = _choose_step(sorted(candidates), step, repo_id)
        path = hf_hub_download(repo_id, candidates[chosen])
    except (HfHubHTTPError, OSError) as error:
        raise ValueError(
            f"could not fetch {repo_id} from the Hub ({str(error).splitlines()[0]}); "
            "download the repository yourself and pass its folder"
        ) from None
    return SourceCheckpoint(Path(path), chosen, note)
