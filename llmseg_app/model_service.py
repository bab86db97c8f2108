"""One model per process, loaded once and lazily, whose failure is reported instead of raised.

The app must serve the leaderboard even when the model cannot load (missing weights, no memory),
so loading errors are kept as a message the demo tab shows, and torch is imported only here, on
first use: a leaderboard-only page never pays for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, ParamSpec, TypeVar

if TYPE_CHECKING:
    from llmseg.pipeline import Segmenter

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

State = Literal["not loaded", "loading", "ready", "failed"]


class ModelUnavailable(RuntimeError):
    """The model could not be loaded; the message says why and is shown to the user."""


@dataclass(frozen=True)
class ModelStatus:
    """What the demo tab's banner reports."""

    state: State
    preset: str
    message: str = ""
    load_seconds: float | None = None


class ModelService:
    """Holds the ``Segmenter`` for one preset; ``segmenter()`` loads it on first call, thread-safely."""

    def __init__(self, preset: str, device: str | None = None) -> None:
        self.preset = preset
        self.device = device
        self._lock = threading.Lock()
        self._segmenter: Segmenter | None = None
        self._error: str | None = None
        self._loading = False
        self._load_seconds: float | None = None

    def status(self) -> ModelStatus:
        if self._segmenter is not None:
            return ModelStatus("ready", self.preset, load_seconds=self._load_seconds)
        if self._error is not None:
            return ModelStatus("failed", self.preset, self._error)
        return ModelStatus("loading" if self._loading else "not loaded", self.preset)

    def segmenter(self) -> Segmenter:
        """The loaded segmenter; raises ``ModelUnavailable`` (every call) once loading has failed."""
        with self._lock:
            if self._segmenter is None and self._error is None:
                self._load()
            if self._segmenter is None:
                raise ModelUnavailable(self._error or "the model is not loaded")
            return self._segmenter

    def preload_in_background(self) -> threading.Thread:
        """Start loading now so the first question does not wait for it; errors land in ``status()``."""
        thread = threading.Thread(target=self._preload, name="llmseg-model-preload", daemon=True)
        thread.start()
        return thread

    def _preload(self) -> None:
        try:
            self.segmenter()
        except ModelUnavailable:
            pass  # already recorded in status() and logged by _load

    def _load(self) -> None:
        self._loading = True
        start = time.perf_counter()
        try:
            import torch

            from llmseg.model.llmseg import LLMSeg
            from llmseg.pipeline import Segmenter

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = LLMSeg.from_pretrained(self.preset, device=device)
            self._segmenter = Segmenter(model)
            self._load_seconds = time.perf_counter() - start
            logger.info("loaded model preset %r on %s in %.1f s", self.preset, device, self._load_seconds)
        except ValueError as error:  # a configuration problem the message explains (e.g. missing weights)
            self._error = str(error)
            logger.error("could not load model preset %r: %s", self.preset, error)
        except Exception as error:  # any other failure must leave the rest of the app serving too
            self._error = f"{type(error).__name__}: {error}"
            logger.exception("could not load model preset %r", self.preset)
        finally:
            self._loading = False


def on_gpu_when_available(function: Callable[P, R]) -> Callable[P, R]:
    """Apply ``spaces.GPU`` (ZeroGPU) when the ``spaces`` package is installed, else return as is.

    The package only exists on Hugging Face Spaces, so local runs keep the plain function.
    """
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(duration=60)(function)
