"""The selection module: the query attends over the proposals, and two heads score each proposal.

Release layout (submodule names map 1:1 onto the released checkpoint, see
``official-checkpoint.md``): ``text_projection`` = ``text_hidden_fcs.0``, ``blocks`` =
``lisa_attention_layers``, ``final_attn`` = ``lisa_final_attn``, ``norm_final_attn`` =
``lisa_norm_final_attn``, ``iop_head`` = ``lisa_iou_head``, ``embedding_head`` =
``lisa_embedding_head``. The blocks are segment-anything's ``TwoWayAttentionBlock`` with zero
positional encodings (the release's copy of it had none) and full-width attention; proposals are
the queries and the text tokens the keys. Only a key-padding mask is added, because proposals and
query tokens are padded per batch.

With ``query_tokens="seg"`` (the release) the only key is the projected ``<SEG>`` state; with
``"all"`` every query token's projected state joins it, so proposals->text attention can weigh
words instead of adding one constant vector to every proposal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock
from torch import nn

from llmseg.model.config import SelectorConfig


@dataclass
class SelectorOutput:
    """Scores for each proposal; values at padded proposals are defined but meaningless.

    iop: (B, K) predicted intersection-over-proposal in [0, 1]. similarity: (B, K) cosine between
    each fused proposal's embedding and ``query``, in [-1, 1]. query: (B, D) the projected
    ``<SEG>`` state before fusion. existence_logit: (B,) "any target at all" logit, when the
    config enables that head.
    """

    iop: torch.Tensor
    similarity: torch.Tensor
    query: torch.Tensor
    existence_logit: torch.Tensor | None = None


def masked_attention(
    attention: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor
) -> torch.Tensor:
    """segment-anything's ``Attention.forward`` with padded keys left out of the softmax.

    key_valid: (B, N_keys) bool. A row without any valid key gets a zero update.
    """
    q = attention._separate_heads(attention.q_proj(q), attention.num_heads)
    k = attention._separate_heads(attention.k_proj(k), attention.num_heads)
    v = attention._separate_heads(attention.v_proj(v), attention.num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~key_valid[:, None, None, :], torch.finfo(scores.dtype).min)
    out = torch.softmax(scores, dim=-1) @ v
    out = attention.out_proj(attention._recombine_heads(out))
    return out * key_valid.any(dim=1).to(out.dtype)[:, None, None]


class FusionBlock(TwoWayAttentionBlock):
    """``TwoWayAttentionBlock`` (same parameters) run with zero positional encodings and padding masks."""

    def forward(  # type: ignore[override]
        self, queries: torch.Tensor, keys: torch.Tensor, query_valid: torch.Tensor, key_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.norm1(queries + masked_attention(self.self_attn, queries, queries, queries, query_valid))
        queries = self.norm2(queries + masked_attention(self.cross_attn_token_to_image, queries, keys, keys, key_valid))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + masked_attention(self.cross_attn_image_to_token, keys, queries, queries, query_valid))
        return queries, keys


class Selector(nn.Module):
    """Proposal features + the LLM's ``<SEG>`` state -> IoP and similarity per proposal."""

    def __init__(self, config: SelectorConfig, hidden_size: int) -> None:
        super().__init__()
        dim = config.dim
        self.config = config
        self.text_projection = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, dim), nn.Dropout(config.dropout)
        )
        self.blocks = nn.ModuleList(
            FusionBlock(dim, config.num_heads, config.mlp_dim, attention_downsample_rate=1) for _ in range(config.depth)
        )
        self.final_attn = Attention(dim, config.num_heads)
        self.norm_final_attn = nn.LayerNorm(dim)
        self.iop_head = nn.Sequential(
            nn.Linear(dim, config.iop_hidden), nn.ReLU(), nn.Linear(config.iop_hidden, 1), nn.Sigmoid()
        )
        self.embedding_head = nn.Sequential(
            nn.Linear(dim, config.embedding_hidden), nn.ReLU(), nn.Linear(config.embedding_hidden, dim)
        )
        self.existence_head = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1)) if config.existence_head else None
        )

    def forward(
        self,
        proposal_features: torch.Tensor,
        proposal_valid: torch.Tensor,
        seg_hidden: torch.Tensor,
        token_hidden: torch.Tensor | None = None,
        token_valid: torch.Tensor | None = None,
    ) -> SelectorOutput:
        """proposal_features (B, K, D), proposal_valid (B, K) bool, seg_hidden (B, H);
        token_hidden (B, T, H) and token_valid (B, T) bool are the query's tokens, used when
        ``query_tokens == "all"``.
        """
        batch, count = proposal_valid.shape
        if proposal_features.shape[:2] != (batch, count) or seg_hidden.shape[0] != batch:
            raise ValueError(
                f"batch shapes disagree: features {tuple(proposal_features.shape)}, "
                f"valid {tuple(proposal_valid.shape)}, seg_hidden {tuple(seg_hidden.shape)}"
            )
        query = self.text_projection(seg_hidden)
        keys, key_valid = query[:, None], proposal_valid.new_ones(batch, 1)
        if self.config.query_tokens == "all":
            if token_hidden is None or token_valid is None:
                raise ValueError('selector.query_tokens="all" needs token_hidden and token_valid')
            keys = torch.cat([keys, self.text_projection(token_hidden)], dim=1)
            key_valid = torch.cat([key_valid, token_valid.bool()], dim=1)

        proposals = proposal_features
        for block in self.blocks:
            proposals, keys = block(proposals, keys, proposal_valid, key_valid)
        proposals = self.norm_final_attn(
            proposals + masked_attention(self.final_attn, proposals, keys, keys, key_valid)
        )

        iop = self.iop_head(proposals).squeeze(-1)
        similarity = F.cosine_similarity(self.embedding_head(proposals), query[:, None], dim=-1, eps=1e-8)
        # The fused <SEG> key has attended to every proposal: a summary of the whole scene for this query.
        existence = self.existence_head(keys[:, 0]).squeeze(-1) if self.existence_head is not None else None
        return SelectorOutput(iop=iop, similarity=similarity, query=query, existence_logit=existence)
