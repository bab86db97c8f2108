"""Published ReasonSeg results, shown beside the leaderboard but never mixed into it.

These numbers come from the papers (gIoU / cIoU in percent, as printed there) and were not
re-measured here; protocols differ between papers (zero-shot or fine-tuned, train+val used or
not, ignore handling), and they are on ReasonSeg, not on the leaderboard's held-out split.

Each row carries the same declared-protocol fields as a submission, filled only where the row's
source says so (the paper's own "zero-shot" / "ft" label, the size in the model's name, the
arXiv id); everything else is ``unknown`` (or empty for numbers and links), never guessed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


REPORTED_LABEL = "reported, not verified here"
UNKNOWN = "unknown"

LISA = "LISA paper (Lai et al., arXiv:2308.00692)"
LISA_CVPR = "LISA CVPR 2024 paper (Lai et al., arXiv:2308.00692)"
LLM_SEG = "LLM-Seg paper (Wang & Ke, arXiv:2404.08767)"
READ = "READ, CVPR 2025 (Qian et al., arXiv:2412.17741)"
X_SAM = "X-SAM (Wang et al., arXiv:2508.04655)"
SEG_ZERO = "Seg-Zero (Liu et al., arXiv:2503.06520)"
_ARXIV = re.compile(r"arXiv:(\d{4}\.\d{4,5})")


@dataclass(frozen=True)
class ReportedResult:
    """One published row; None where the paper gives no number, ``unknown`` where it does not say.

    ``protocol`` is zero-shot, fine-tuned or unknown; ``params`` is the size in the model's name.
    """

    method: str
    val_giou: float | None
    val_ciou: float | None
    test_giou: float | None
    test_ciou: float | None
    source: str
    remark: str = ""
    protocol: str = UNKNOWN
    trained_on: str = UNKNOWN
    checkpoint_selection: str = UNKNOWN
    params: float | None = None
    code: str | None = None
    own_paper: bool = True  # False where the source paper measured someone else's method

    @property
    def paper(self) -> str | None:
        """The method's paper: the source's arXiv page when the source is the method's own paper."""
        match = _ARXIV.search(self.source)
        return f"https://arxiv.org/abs/{match.group(1)}" if match and self.own_paper else None


ZERO_SHOT, FINE_TUNED = "zero-shot", "fine-tuned"
B = 1e9

REPORTED_RESULTS: tuple[ReportedResult, ...] = (
    ReportedResult("LISA-7B (zero-shot)", 44.4, 46.0, 36.8, 34.1, LISA, protocol=ZERO_SHOT, params=7 * B),
    ReportedResult("LISA-7B (ft)", 52.9, 54.0, 47.3, 48.4, LISA, protocol=FINE_TUNED, params=7 * B),
    ReportedResult("LISA-13B (ft)", 56.2, 62.9, 51.7, 51.1, LISA, protocol=FINE_TUNED, params=13 * B),
    ReportedResult("LISA-7B-LLaVA1.5 (ft)", 61.3, 62.9, 55.6, 56.9, LISA_CVPR, protocol=FINE_TUNED, params=7 * B),
    ReportedResult("LISA-13B-LLaVA1.5 (ft)", 65.0, 72.9, 61.3, 62.2, LISA_CVPR, protocol=FINE_TUNED, params=13 * B),
    ReportedResult("LLaVA + GroundingSAM", 47.4, 34.6, None, None, LLM_SEG, own_paper=False),
    ReportedResult("LLM-Seg, 10 ep, zero-shot", 47.4, 35.4, None, None, LLM_SEG, protocol=ZERO_SHOT),
    ReportedResult("LLM-Seg, 10 ep", 52.3, 47.5, None, None, LLM_SEG),
    ReportedResult("LLM-Seg, 20 ep", 55.4, 45.6, None, None, LLM_SEG),
    ReportedResult("READ-7B", 59.8, 67.6, 58.5, 58.6, READ, params=7 * B),
    ReportedResult("READ-13B", None, None, 62.2, 62.8, READ, params=13 * B),
    ReportedResult("X-SAM", 56.6, 32.9, 57.8, 41.0, X_SAM),
    ReportedResult(
        "Seg-Zero-7B",
        62.6,
        62.0,
        57.5,
        None,
        SEG_ZERO,
        remark="test: gIoU only, zero-shot",
        protocol=ZERO_SHOT,
        params=7 * B,
    ),
    ReportedResult("OVSeg", 28.5, 18.6, 26.1, 20.8, LISA, own_paper=False),
    ReportedResult("GRES", 22.4, 19.9, 21.3, 22.0, LISA, own_paper=False),
    ReportedResult("X-Decoder", 22.6, 17.9, 21.7, 16.3, LISA, own_paper=False),
    ReportedResult("SEEM", 25.5, 21.2, 24.3, 18.7, LISA, own_paper=False),
)

COLUMNS = {
    "method": "method",
    "val_giou": "val gIoU",
    "val_ciou": "val cIoU",
    "test_giou": "test gIoU",
    "test_ciou": "test cIoU",
    "protocol": "protocol",
    "trained_on": "trained_on",
    "checkpoint_selection": "checkpoint_selection",
    "params": "params",
    "code": "code",
    "paper": "paper",
    "source": "source",
    "remark": "remark",
}


def reported_table() -> pd.DataFrame:
    """The published ReasonSeg numbers (percent), each row labelled as reported, not verified."""
    import pandas as pd

    rows = [{**asdict(result), "paper": result.paper} for result in REPORTED_RESULTS]
    frame = pd.DataFrame(rows)[list(COLUMNS)].rename(columns=COLUMNS)
    frame["benchmark"] = "ReasonSeg"
    frame["status"] = REPORTED_LABEL
    return frame
