"""Checkpoint folders: which weights are stored, and how a model name resolves to a config and a folder.

A folder holds ``config.json`` and only what cannot be rebuilt from it:
- ``selector.safetensors``: the selection module (always trained);
- ``region_encoder.safetensors``: the 1x1 conv and the optional shape embedding, plus the DINOv2
  backbone when it trains or was built from a config (a pretrained frozen one is referenced by
  ``region_encoder.dinov2``);
- ``adapter/``: the LoRA adapter and the ``<SEG>`` rows in peft's format, when LoRA fine-tunes a
  pretrained LLaVA (referenced by ``vlm.llava``); or ``vlm.safetensors``: the whole VLM, when it was
  built from a config or fully fine-tuned.
SAM is always referenced (``proposals.sam_checkpoint``); the tokenizer is rebuilt from the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from llmseg.model.config import CONFIG_NAME, LLMSegConfig
from llmseg.model.presets import PRESETS

if TYPE_CHECKING:
    from llmseg.model.llmseg import LLMSeg

SELECTOR_FILE = "selector.safetensors"
REGION_ENCODER_FILE = "region_encoder.safetensors"
VLM_FILE = "vlm.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BACKBONE_PREFIX = "backbone."


def stores_whole_vlm(config: LLMSegConfig) -> bool:
    """True when no pretrained LLaVA could rebuild the VLM: built from a config, or fully fine-tuned."""
    return config.vlm.llava is None or config.vlm.finetune == "full"


def stores_backbone(config: LLMSegConfig) -> bool:
    """True when the DINOv2 weights must be stored: built from a config, or trained."""
    return config.region_encoder.dinov2 is None or config.region_encoder.trainable_backbone


def save(model: LLMSeg, directory: str | os.PathLike[str]) -> Path:
    """Write ``model``'s config and trained weights into ``directory`` (created if needed)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    save_model(model.selector, str(path / SELECTOR_FILE))
    state = model.region_encoder.state_dict()
    if not stores_backbone(model.config):
        state = {name: tensor for name, tensor in state.items() if not name.startswith(BACKBONE_PREFIX)}
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(path / REGION_ENCODER_FILE))
    if stores_whole_vlm(model.config):
        save_model(model.vlm.model, str(path / VLM_FILE))
    else:
        model.vlm.model.save_pretrained(str(path / ADAPTER_DIR))
    return path


def load_weights(model: LLMSeg, directory: str | os.PathLike[str], *, new_modules: bool = False) -> list[str]:
    """Load the weights ``save`` wrote into a model built from the same config.

    ``new_modules``: the model's config may extend the saved one's selector with whole new
    submodules (a warm start); those keep their initialisation, every other weight must match.
    Returns the names (as in ``model.named_parameters``) of the weights left at initialisation.
    """
    path = Path(directory)
    device = str(model.device)
    fresh: list[str] = []
    if new_modules:
        fresh = [f"selector.{name}" for name in _load_extending(model.selector, _require(path / SELECTOR_FILE), device)]
    else:
        _load_strict(model.selector, _require(path / SELECTOR_FILE), device)

    region_file = _require(path / REGION_ENCODER_FILE)
    if stores_backbone(model.config):
        _load_strict(model.region_encoder, region_file, device)
    else:
        result = model.region_encoder.load_state_dict(load_file(str(region_file), device=device), strict=False)
        missing = [name for name in result.missing_keys if not name.startswith(BACKBONE_PREFIX)]
        if missing or result.unexpected_keys:
            raise ValueError(f"{region_file} does not match the config's region encoder: {_describe(result)}")

    if stores_whole_vlm(model.config):
        _load_strict(model.vlm.model, _require(path / VLM_FILE), device)
    else:
        from peft import set_peft_model_state_dict  # only LoRA checkpoints need peft

        adapter = load_file(str(_require(path / ADAPTER_DIR / ADAPTER_WEIGHTS)), device=device)
        result = set_peft_model_state_dict(model.vlm.model, adapter)
        if result.unexpected_keys:
            raise ValueError(f"{path / ADAPTER_DIR} does not match the config's LoRA settings: {_describe(result)}")
    return fresh


def resolve(name_or_path: str | os.PathLike[str]) -> tuple[LLMSegConfig, Path | None]:
    """(config, checkpoint folder) for a folder, a preset name or a Hub model id.

    The folder is None for a preset that is used with fresh weights (``tiny``).
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return LLMSegConfig.from_pretrained(path), path
    if name in PRESETS:
        return _resolve_preset(name)
    if name.count("/") == 1 and not path.exists():
        folder = _download(name)
        return LLMSegConfig.from_pretrained(folder), folder
    raise ValueError(
        f"no model folder, preset or Hub model named {name!r}; presets: {', '.join(PRESETS)}, "
        "or give a folder written by save_pretrained"
    )


def _resolve_preset(name: str) -> tuple[LLMSegConfig, Path | None]:
    preset = PRESETS[name]
    if preset.weights is not None:
        if not (preset.weights / CONFIG_NAME).is_file():
            raise ValueError(
                f"the {name!r} preset's trained weights are not in this checkout ({preset.weights} has no "
                f"{CONFIG_NAME}): {preset.how_to_get_weights}"
            )
        return LLMSegConfig.from_pretrained(preset.weights), preset.weights
    if preset.random_weights_ok:
        return preset.build_config(), None
    raise ValueError(
        f"the {name!r} preset names base models only and its selection module is untrained: pass the folder "
        "written by `python -m llmseg convert-official` or by training (LLMSeg.from_config starts a training run)"
    )


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download  # only Hub ids need the network

    try:
        return Path(snapshot_download(repo_id))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{repo_id!r} is neither a local folder nor a downloadable Hub model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no details'}); check the name or download it"
        ) from None


def _require(file: Path) -> Path:
    if not file.is_file():
        raise ValueError(f"{file.parent} lacks {file.name}: it is not a complete llmseg checkpoint (save it again)")
    return file


def _load_strict(module: nn.Module, file: Path, device: str) -> None:
    try:
        load_model(module, str(file), strict=True, device=device)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(f"{file} does not match the model its config builds ({first_line})") from None


def _load_extending(module: nn.Module, file: Path, device: str) -> list[str]:
    """Load ``file`` into ``module``, whose submodules absent from the file altogether are new;
    returns the new weights' names."""
    state = load_file(str(file), device=device)
    saved_modules = {name.split(".")[0] for name in state}
    result = module.load_state_dict(state, strict=False)
    partial = sorted(name for name in result.missing_keys if name.split(".")[0] in saved_modules)
    if partial or result.unexpected_keys:
        raise ValueError(
            f"{file} does not match the model its config builds: missing {partial[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    return sorted(result.missing_keys)


def _describe(result: object) -> str:
    missing = getattr(result, "missing_keys", [])
    unexpected = getattr(result, "unexpected_keys", [])
    return f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
