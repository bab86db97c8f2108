"""Loading a frozen segment-anything ``Sam`` from an original checkpoint file.

The builders come from segment-anything's own registry, so a ``sam_vit_h_4b8939.pth`` loads into
exactly the model the release used. ``SAM_BUILDERS`` is a plain dict: tests register a tiny
builder there and go through the same loading code as the real ViT-H.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

SAM_DOWNLOAD_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}

# model type -> builder of an untrained ``Sam`` of that architecture (weights are loaded after).
SAM_BUILDERS: dict[str, Callable[[], Sam]] = {name: sam_model_registry[name] for name in ("vit_h", "vit_l", "vit_b")}


def load_sam(checkpoint: str | Path, model_type: str = "vit_h", device: str = "cpu") -> Sam:
    """Build the ``model_type`` architecture and load an original SAM state dict into it (eval mode)."""
    if model_type not in SAM_BUILDERS:
        raise ValueError(f"unknown SAM model type {model_type!r}; choose one of {', '.join(sorted(SAM_BUILDERS))}")
    path = Path(checkpoint)
    if not path.is_file():
        url = SAM_DOWNLOAD_URLS.get(model_type, SAM_DOWNLOAD_URLS["vit_h"])
        raise ValueError(
            f"SAM checkpoint {path} not found: download it from {url} and pass its path, "
            "or use the `shapes` preset, which needs no SAM weights"
        )
    sam = SAM_BUILDERS[model_type]()
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated download or a non-checkpoint file
        raise ValueError(f"{path} is not a readable SAM checkpoint ({error}); download it again") from None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a SAM state dict; download it again")
    try:
        sam.load_state_dict(state_dict)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(
            f"{path} does not match SAM model type {model_type!r} ({first_line}); set the matching sam_model_type"
        ) from None
    return sam.to(device).eval()
