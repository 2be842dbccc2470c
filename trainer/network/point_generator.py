"""The point generator: K point queries read N CLIP stages and the words, and emit point prompts.

Per stage n (DESIGN §6), with V_n the stage's patch tokens and T the word features, both
projected to `hidden_dim` (a per-stage projection of T gives T_n):

    V'_n    = LN(V_n + CrossAttn(V_n, T_n))            fusion: every patch reads the words
    Q       = LN(Q + SelfAttn(Q))                      queries see each other (set prediction)
    Q       = LN(Q + CrossAttn(Q, V'_n))               queries read the fused image,
    Q       = LN(Q + CrossAttn(Q, T_n))                then the words,
    Q_{n+1} = LN(Q + FFN(Q))                           then an FFN

Fusion is word-level cross-attention rather than a gated product with the pooled sentence:
referring expressions carry relations and positions ("the cup left of the man") that one pooled
vector blurs, and attention over T ≤ 77 words costs little next to the G*G patches. V_n gets a
fixed 2-D sine position code after projection, in keys and values, so the queries can read
*where* as well as *what*: the heads regress coordinates. The queries self-attend, as in DETR's
decoder, so that under one-to-one matching they can split the objects between them.

Heads, on the last stage's queries: PointHead → M points per query, (x, y) = sigmoid ∈ [0, 1] of
the original image and a positive-label logit each; ScoreHead → one referent logit per query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.frozen import FrozenClip
from trainer.network.clip_stages import resolve_stage_indices, text_dim
from trainer.network.layers import Stage, mlp, sam_stage_tokens, sine_position_2d


@dataclass(frozen=True)
class PointGeneratorConfig:
    """params.yaml [point_generator]."""

    num_queries: int = 8  # K: ≥ the candidates of one expression (phrases.max_candidates = 4)
    points_per_query: int = 16  # M: as many as the pseudo-labels carry (points.m = 16)
    hidden_dim: int = 256  # width of queries and fused features (= SAM's prompt width)
    num_heads: int = 8  # attention heads in every attention layer
    ffn_dim: int = 2048  # hidden width of the query FFN (DETR's)
    stage_indices: tuple[int, ...] = (
        2,
        5,
        8,
        11,
    )  # CLIP blocks used as stages, 0-based (<0: from end)
    dropout: float = 0.1  # in attention and FFN residuals (DETR's)
    sam_stage: int = 0  # >0: SAM's image embedding pooled to this side is one more (last) stage
    # "regress": MLP → sigmoid xy; "softargmax": each point a softmax over the last stage's cells;
    # "map": each query a point map over those cells (where its positive points belong), read
    # into SAM prompts by `decode_rule` (pipeline.labelling.prompting), as relevance maps are
    point_mode: str = "regress"
    positive_points: bool = False  # ablation: every point a positive prompt (no negative points)
    decode_rule: str = "box_points"  # point_mode "map": the map → prompts rule
    # read the whole expression's relevance map (the store's, CLIP's response to the sentence;
    # in the synthetic world the simulated one) as one more input: an embedding added to every
    # stage's patch tokens and, in map mode, a residual the point map starts from
    relevance_input: bool = False
    # > 0 (map mode, relevance_input): also read the maps of the expression's first P candidate
    # phrases (CLIP's response to each noun phrase, in sentence order) as input channels, and
    # start query k < P's point map from phrase k's map instead of the sentence's: the sentence
    # map lights every object the sentence mentions, a phrase's map only what that phrase names
    phrase_priors: int = 0
    # training only (relevance_input): the chance that a sample's maps are withheld (all zero),
    # so the generator must also find the referent from the words and the image. In the synthetic
    # world the pseudo-labels are SAM's masks prompted by these very maps: their mistakes are the
    # maps' mistakes, and a generator that always sees the maps learns to copy them
    relevance_dropout: float = 0.0

    def __post_init__(self) -> None:
        if min(self.num_queries, self.points_per_query, self.num_heads) < 1:
            raise ValueError("num_queries, points_per_query and num_heads must be at least 1")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must divide by num_heads")
        if self.point_mode not in ("regress", "softargmax", "map"):
            raise ValueError(f"point_mode {self.point_mode!r}: choose regress, softargmax or map")
        if self.point_mode == "map" and self.sam_stage < 1:
            raise ValueError("point_mode map reads its maps on the SAM stage: set sam_stage")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.phrase_priors and not (self.relevance_input and self.point_mode == "map"):
            raise ValueError("phrase_priors needs relevance_input and point_mode map")
        if not 0 <= self.phrase_priors <= self.num_queries:
            raise ValueError("phrase_priors must be in [0, num_queries]")
        if not 0.0 <= self.relevance_dropout < 1.0:
            raise ValueError("relevance_dropout must be in [0, 1)")
        if self.relevance_dropout and not self.relevance_input:
            raise ValueError("relevance_dropout needs relevance_input: there is no map to withhold")


RELEVANCE_GAIN = 4.0  # initial weight of the relevance residual on map logits


def _resize(relevance: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, R, R) maps → (B, side², C) cells, area-averaged (bilinear when upsampling)."""
    mode = "area" if relevance.shape[-1] >= side else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    cells = nn.functional.interpolate(relevance, size=(side, side), mode=mode, **kwargs)
    return cells.flatten(2).transpose(1, 2)  # (B, side², 1)


class PointGenerator(nn.Module):
    """K learnable point queries → M point prompts each and a referent score.

    Args:
        image_dims: width C_n of each of the N CLIP stages.
        text_dim: width C_t of the word features.
        hidden_dim: width D of queries and fused features.
        num_queries: K.
        points_per_query: M.
        num_heads: attention heads.
        ffn_dim: query FFN hidden width.
        dropout: residual dropout.
    """

    def __init__(
        self,
        image_dims: list[int],
        text_dim: int,
        hidden_dim: int = 256,
        num_queries: int = 8,
        points_per_query: int = 16,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        sam_stage: int = 0,
        point_mode: str = "regress",
        positive_points: bool = False,
        decode_rule: str = "box_points",
        relevance_input: bool = False,
        phrase_priors: int = 0,
        relevance_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.sam_stage, self.point_mode = sam_stage, point_mode
        self.positive_points, self.decode_rule = positive_points, decode_rule
        self.relevance_input, self.phrase_priors = relevance_input, phrase_priors
        self.relevance_dropout = relevance_dropout
        if sam_stage:
            image_dims = [*image_dims, 256]  # SAM's embedding width
        self.num_queries = num_queries
        self.points_per_query = points_per_query
        self.hidden_dim = hidden_dim
        self.queries = nn.Embedding(num_queries, hidden_dim)
        self.stages = nn.ModuleList(
            Stage(c, text_dim, hidden_dim, num_heads, ffn_dim, dropout) for c in image_dims
        )
        self.point_head = mlp(hidden_dim, hidden_dim, points_per_query * 3, 3)
        if point_mode == "softargmax":
            self.point_query = nn.Linear(hidden_dim, points_per_query * hidden_dim)
        if point_mode == "map":  # MaskFormer's split: query embedding · per-cell embedding
            self.map_query = mlp(hidden_dim, hidden_dim, hidden_dim, 2)
            self.map_cells = mlp(hidden_dim, hidden_dim, hidden_dim, 2)
        self.score_head = mlp(hidden_dim, hidden_dim, 1, 2)
        if relevance_input:
            self.relevance_embed = nn.Linear(1 + phrase_priors, hidden_dim)  # per cell
            # map mode: logits start as gain · (relevance - ½), relevance scaled to peak 1
            self.relevance_gain = nn.Parameter(torch.tensor(RELEVANCE_GAIN))

    def _priors(self, relevance: torch.Tensor, side: int) -> torch.Tensor:
        """(B, C, R, R) peak-1 maps → (B, K, L) each query's starting map: phrase k's for
        k < P where the expression has that phrase, the sentence's otherwise."""
        cells = _resize(relevance, side).transpose(1, 2)  # (B, C, L)
        b, k = cells.shape[0], self.num_queries
        priors = cells[:, :1].expand(b, k, -1).clone()  # (B, K, L) the sentence's
        if self.phrase_priors:
            phrases = cells[:, 1:]  # (B, P, L)
            has = phrases.amax(dim=2, keepdim=True) > 0  # (B, P, 1)
            priors[:, : self.phrase_priors] = torch.where(
                has, phrases, priors[:, : self.phrase_priors]
            )
        return priors

    def forward(
        self,
        stages: list[torch.Tensor],
        words: torch.Tensor,
        text_pad: torch.Tensor,
        sam_embedding: torch.Tensor | None = None,
        sizes: torch.Tensor | None = None,
        sam_tokens: torch.Tensor | None = None,
        relevance: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict point prompts.

        Args:
            stages: N × (B, G*G, C_n) patch tokens on a square, row-major G×G grid.
            words: (B, T, C_t) word features.
            text_pad: (B, T) bool, True = padding.
            sam_embedding, sizes: (B, 256, 64, 64) SAM embeddings and (B, 2) original sizes,
                pooled here into the SAM stage, unless
            sam_tokens: (B, S*S, 256) that stage, already pooled (the feature cache's).
            relevance: (B, R, R) the expression's relevance map (`relevance_input` models), or
                (B, 1+P, R, R): that map, then its first P phrases' maps (`phrase_priors`;
                an all-zero channel is a phrase the expression does not have).

        Returns:
            pred_points (B, K, M, 2) (x, y) in [0, 1] of the original image, pred_point_logits
            (B, K, M) positive-label logits, pred_scores (B, K) referent logits.
        """
        stages = list(stages)
        if self.sam_stage and sam_tokens is not None:
            stages.append(sam_tokens)
        elif self.sam_stage:
            if sam_embedding is None:
                raise ValueError("this generator reads SAM's image embedding: pass sam_embedding")
            if sizes is None:
                raise ValueError("the SAM stage needs the original sizes (B, 2)")
            stages.append(sam_stage_tokens(sam_embedding, sizes, self.sam_stage))
        if len(stages) != len(self.stages):
            raise ValueError(f"{len(stages)} CLIP stages given, the model has {len(self.stages)}")
        if self.relevance_input and relevance is None:
            raise ValueError("this generator reads the expression's relevance map: pass relevance")
        if relevance is not None:  # each map scaled to peak 1: sources differ in range
            relevance = relevance.float()
            relevance = relevance[:, None] if relevance.dim() == 3 else relevance  # (B, C, R, R)
            if relevance.shape[1] != 1 + self.phrase_priors:
                raise ValueError(
                    f"relevance has {relevance.shape[1]} channels, the model reads "
                    f"{1 + self.phrase_priors}: the sentence's map, then one per phrase prior"
                )
            peak = relevance.flatten(2).amax(dim=2).clamp_min(1e-6)  # (B, C)
            relevance = relevance / peak[..., None, None]
            if self.training and self.relevance_dropout > 0:  # withheld: every channel zero
                kept = torch.rand(relevance.shape[0], device=relevance.device)
                kept = (kept >= self.relevance_dropout).to(relevance.dtype)
                relevance = relevance * kept[:, None, None, None]
        b = stages[0].shape[0]
        q = self.queries.weight[None].expand(b, -1, -1)  # (B, K, D)
        for stage, image in zip(self.stages, stages, strict=True):
            length = image.shape[1]
            side = math.isqrt(length)
            if side * side != length:
                raise ValueError(f"{length} patch tokens are not a square grid: give square images")
            pos = sine_position_2d((side, side), self.hidden_dim, words.device)  # (L, D)
            if self.relevance_input:
                cells = _resize(relevance, side)  # (B, L, C)
                pos = pos + self.relevance_embed(cells)  # (B, L, D)
            q, fused = stage(q, image, pos, words, text_pad)
        raw = self.point_head(q).reshape(b, self.num_queries, self.points_per_query, 3)
        if self.positive_points:  # a constant, certain "positive" label for every point
            raw = torch.cat([raw[..., :2], torch.full_like(raw[..., 2:], 10.0)], dim=-1)
        if self.point_mode == "map":  # each query: a point map over the last stage's cells
            cells_emb = self.map_cells(fused)  # (B, L, D)
            logits = torch.einsum("bkd,bld->bkl", self.map_query(q), cells_emb)  # (B, K, L)
            logits = logits / math.sqrt(self.hidden_dim)
            if self.relevance_input:
                logits = logits + self.relevance_gain * (self._priors(relevance, side) - 0.5)
            top = logits.topk(self.points_per_query, dim=-1).indices  # (B, K, M) its peaks
            cells = (torch.arange(side, device=words.device, dtype=logits.dtype) + 0.5) / side
            xy = torch.stack([cells[top % side], cells[top // side]], dim=-1)  # (B, K, M, 2)
            return {
                "pred_points": xy,
                "pred_point_logits": logits.gather(-1, top),
                "pred_scores": self.score_head(q)[..., 0],
                "pred_maps": logits.reshape(b, self.num_queries, side, side),
            }
        if self.point_mode == "softargmax":  # each point: a softmax over the last stage's cells
            pq = self.point_query(q).reshape(b, self.num_queries, self.points_per_query, -1)
            att = torch.einsum("bkmd,bld->bkml", pq, fused) / math.sqrt(self.hidden_dim)
            cells = (torch.arange(side, device=words.device, dtype=att.dtype) + 0.5) / side
            grid = torch.stack(torch.meshgrid(cells, cells, indexing="ij"), -1).reshape(-1, 2)
            xy = att.softmax(-1) @ grid.flip(-1)  # (B, K, M, 2) as (x, y)
            return {
                "pred_points": xy,
                "pred_point_logits": raw[..., 2],
                "pred_scores": self.score_head(q)[..., 0],
            }
        return {
            "pred_points": raw[..., :2].sigmoid(),  # (B, K, M, 2)
            "pred_point_logits": raw[..., 2],  # (B, K, M)
            "pred_scores": self.score_head(q)[..., 0],  # (B, K)
        }


def build_point_generator(cfg: PointGeneratorConfig, clip: FrozenClip) -> PointGenerator:
    """A PointGenerator sized for `clip`'s ViT (stage widths) and text tower (word width)."""
    visual = clip.model.visual
    stage_indices = resolve_stage_indices(cfg.stage_indices, len(visual.transformer.resblocks))
    return PointGenerator(
        image_dims=[int(visual.transformer.width)] * len(stage_indices),
        text_dim=text_dim(clip.model),
        hidden_dim=cfg.hidden_dim,
        num_queries=cfg.num_queries,
        points_per_query=cfg.points_per_query,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        dropout=cfg.dropout,
        sam_stage=cfg.sam_stage,
        point_mode=cfg.point_mode,
        positive_points=cfg.positive_points,
        decode_rule=cfg.decode_rule,
        relevance_input=cfg.relevance_input,
        phrase_priors=cfg.phrase_priors,
        relevance_dropout=cfg.relevance_dropout,
    )
