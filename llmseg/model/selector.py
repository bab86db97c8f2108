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
    ``<SEG>`` state (or mean projected token state, per ``similarity_query``) before fusion.
    existence_logit: (B,) "any target at all" logit, when the config enables that head.
    anchor_logit: (B, K) "this proposal is the question's anchor" logits, with ``anchor_geometry``.
    """

    iop: torch.Tensor
    similarity: torch.Tensor
    query: torch.Tensor
    existence_logit: torch.Tensor | None = None
    anchor_logit: torch.Tensor | None = None


PAIR_FEATURES = 5  # per proposal pair: dx, dy, distance, log size ratio, size difference


def masked_attention(
    attention: Attention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_valid: torch.Tensor,
    relation: PairRelation | None = None,
) -> torch.Tensor:
    """segment-anything's ``Attention.forward`` with padded keys left out of the softmax.

    key_valid: (B, N_keys) bool. A row without any valid key gets a zero update. ``relation``
    (self-attention among proposals only) adds pairwise logit biases and a value term.
    """
    q = attention._separate_heads(attention.q_proj(q), attention.num_heads)
    k = attention._separate_heads(attention.k_proj(k), attention.num_heads)
    v = attention._separate_heads(attention.v_proj(v), attention.num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if relation is not None:
        scores = scores + relation.bias
    scores = scores.masked_fill(~key_valid[:, None, None, :], torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    out = attention._recombine_heads(weights @ v)
    if relation is not None:
        # What each head attended to, seen from the query proposal: its weighted mean pair geometry.
        attended = torch.einsum("bhqk,bqkf->bqhf", weights, relation.features).flatten(2)
        out = out + relation.value(attended)
    out = attention.out_proj(out)
    return out * key_valid.any(dim=1).to(out.dtype)[:, None, None]


@dataclass
class PairRelation:
    """Relative geometry for one block's proposal self-attention.

    bias: (B, heads, K, K) logit bias. features: (B, K, K, PAIR_FEATURES) pair geometry.
    value: maps each head's attended geometry (heads * PAIR_FEATURES) into the attention's width.
    """

    bias: torch.Tensor
    features: torch.Tensor
    value: nn.Module


def pair_features(geometry: torch.Tensor) -> torch.Tensor:
    """(B, K, 5) boxes (left, top, right, bottom, sqrt area; fractions) -> (B, K, K, 5) pair geometry.

    Entry [b, i, j] describes proposal j as seen from proposal i: centre offset (dx, dy), centre
    distance, log ratio and difference of sqrt areas.
    """
    centre_x = (geometry[..., 0] + geometry[..., 2]) / 2
    centre_y = (geometry[..., 1] + geometry[..., 3]) / 2
    size = geometry[..., 4]
    dx = centre_x[:, None, :] - centre_x[:, :, None]
    dy = centre_y[:, None, :] - centre_y[:, :, None]
    distance = torch.sqrt(dx**2 + dy**2 + 1e-12)
    ratio = torch.log((size[:, None, :] + 1e-3) / (size[:, :, None] + 1e-3))
    difference = size[:, None, :] - size[:, :, None]
    return torch.stack([dx, dy, distance, ratio, difference], dim=-1)


ANCHOR_FEATURES = PAIR_FEATURES + 1  # geometry relative to the soft anchor, and the own anchor weight


def anchor_relative_geometry(anchor_logit: torch.Tensor, valid: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B, K) anchor logits, (B, K) valid, (B, K, K, 5) pair geometry -> (B, K, 6).

    Each proposal's pair geometry towards every proposal, averaged with the anchor softmax as
    weights (where the anchor is, seen from this proposal), plus its own anchor weight, so the
    anchor itself can tell it is not the answer.
    """
    lowest = torch.finfo(anchor_logit.dtype).min
    weights = torch.softmax(anchor_logit.masked_fill(~valid, lowest), dim=1) * valid
    relative = torch.einsum("bk,bqkf->bqf", weights, pairs)
    return torch.cat([relative, weights[..., None]], dim=-1)


class FusionBlock(TwoWayAttentionBlock):
    """``TwoWayAttentionBlock`` (same parameters) run with zero positional encodings and padding masks."""

    def forward(  # type: ignore[override]
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_valid: torch.Tensor,
        key_valid: torch.Tensor,
        relation: PairRelation | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.norm1(
            queries + masked_attention(self.self_attn, queries, queries, queries, query_valid, relation)
        )
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
        self.input_mlp = (
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, config.mlp_dim), nn.ReLU(), nn.Linear(config.mlp_dim, dim))
            if config.input_mlp
            else None
        )
        self.key_position = nn.Embedding(config.key_positions, dim) if config.key_positions else None
        self.blocks = nn.ModuleList(
            FusionBlock(dim, config.num_heads, config.mlp_dim, attention_downsample_rate=1) for _ in range(config.depth)
        )
        if config.pairwise_geometry:
            self.pair_bias = nn.Sequential(
                nn.Linear(PAIR_FEATURES, dim), nn.ReLU(), nn.Linear(dim, config.depth * config.num_heads)
            )
            self.pair_values = nn.ModuleList(
                nn.Linear(config.num_heads * PAIR_FEATURES, dim) for _ in range(config.depth)
            )
        if config.anchor_geometry:
            # The anchor is named by a few words of the query: a score per key pools them into an
            # anchor query, and the proposals are matched with it as the answer is with the query.
            self.anchor_words = nn.Linear(dim, 1)
            self.anchor_embedding = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
            self.anchor_projection = nn.Sequential(nn.Linear(ANCHOR_FEATURES, dim), nn.ReLU(), nn.Linear(dim, dim))
            # Zero output at initialisation: a model warm-started from one without the anchor path
            # begins exactly where that model was.
            nn.init.zeros_(self.anchor_projection[-1].weight)
            nn.init.zeros_(self.anchor_projection[-1].bias)
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
        proposal_geometry: torch.Tensor | None = None,
    ) -> SelectorOutput:
        """proposal_features (B, K, D), proposal_valid (B, K) bool, seg_hidden (B, H);
        token_hidden (B, T, H) and token_valid (B, T) bool are the query's tokens, used when
        ``query_tokens == "all"``; proposal_geometry (B, K, 5) the proposals' boxes
        (``LLMSeg.proposal_boxes``), used when ``pairwise_geometry``.
        """
        batch, count = proposal_valid.shape
        if proposal_features.shape[:2] != (batch, count) or seg_hidden.shape[0] != batch:
            raise ValueError(
                f"batch shapes disagree: features {tuple(proposal_features.shape)}, "
                f"valid {tuple(proposal_valid.shape)}, seg_hidden {tuple(seg_hidden.shape)}"
            )
        seg_query = self.text_projection(seg_hidden)
        keys, key_valid = seg_query[:, None], proposal_valid.new_ones(batch, 1)
        if self.config.query_tokens == "all" or self.config.similarity_query == "tokens":
            if token_hidden is None or token_valid is None:
                raise ValueError("this selector config reads the query's tokens: pass token_hidden and token_valid")
            tokens, token_valid = self.text_projection(token_hidden), token_valid.bool()
        if self.config.query_tokens == "all":
            keys = torch.cat([keys, tokens], dim=1)
            key_valid = torch.cat([key_valid, token_valid], dim=1)
        if self.config.similarity_query == "tokens":
            weights = token_valid.to(tokens.dtype)[..., None]
            query = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        else:
            query = seg_query
        if self.key_position is not None:
            if keys.shape[1] > self.config.key_positions:
                raise ValueError(
                    f"the query has {keys.shape[1] - 1} tokens but selector.key_positions allows "
                    f"{self.config.key_positions - 1}: shorten the question or raise key_positions"
                )
            keys = keys + self.key_position.weight[: keys.shape[1]]

        relations: list[PairRelation | None] = [None] * len(self.blocks)
        if self.config.pairwise_geometry:
            if proposal_geometry is None or proposal_geometry.shape != (batch, count, 5):
                raise ValueError("selector.pairwise_geometry needs proposal_geometry of shape (B, K, 5)")
            pairs = pair_features(proposal_geometry.float()).to(proposal_features.dtype)
            biases = self.pair_bias(pairs).permute(0, 3, 1, 2).chunk(len(self.blocks), dim=1)
            relations = [PairRelation(b, pairs, v) for b, v in zip(biases, self.pair_values, strict=True)]

        proposals = proposal_features
        if self.input_mlp is not None:
            proposals = proposals + self.input_mlp(proposals)
        anchor_logit = None
        for index, (block, relation) in enumerate(zip(self.blocks, relations, strict=True)):
            if self.config.anchor_geometry and index == self.config.anchor_after:
                anchor_logit = self.anchor_logits(proposals, keys, key_valid)
                anchor = anchor_relative_geometry(anchor_logit, proposal_valid, pairs)
                proposals = proposals + self.anchor_projection(anchor)
            proposals, keys = block(proposals, keys, proposal_valid, key_valid, relation)
        proposals = self.norm_final_attn(
            proposals + masked_attention(self.final_attn, proposals, keys, keys, key_valid)
        )

        iop = self.iop_head(proposals).squeeze(-1)
        similarity = F.cosine_similarity(self.embedding_head(proposals), query[:, None], dim=-1, eps=1e-8)
        # The fused <SEG> key has attended to every proposal: a summary of the whole scene for this query.
        existence = self.existence_head(keys[:, 0]).squeeze(-1) if self.existence_head is not None else None
        return SelectorOutput(
            iop=iop, similarity=similarity, query=query, existence_logit=existence, anchor_logit=anchor_logit
        )

    def anchor_logits(self, proposals: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        """(B, K) "this proposal is the anchor" logits: each proposal's anchor embedding against the
        query words pooled by their anchor-word scores."""
        lowest = torch.finfo(keys.dtype).min
        word_weights = torch.softmax(self.anchor_words(keys).squeeze(-1).masked_fill(~key_valid, lowest), dim=1)
        anchor_query = torch.einsum("bt,btd->bd", word_weights, keys)
        return torch.einsum("bkd,bd->bk", self.anchor_embedding(proposals), anchor_query) / math.sqrt(keys.shape[-1])
