"""Seed selection for sampling: PICO's attention-pivot scorer, a seeded random pick, or the first seed.

PICO (seed 000) runs the first few denoising steps of |S| candidate seeds and, in a few
transformer blocks, measures how the target cell's queries spread their attention: the mass
on the target's own keys (D_br, the "bridge") and on the visual-context keys (D_vp). The
score S_pivot = z(D_br) - z(D_vp), z-scored across the candidates of one sample, ranks the
seeds; only the best one is run to the end.

Capture goes through diffusers' attention-processor interface: each chosen block's processor
is wrapped by `PivotCapture`, which calls the block's own processor unchanged (so the block's
output is bit-identical) and reads the normalised queries and keys through forward hooks on
the block's `norm_q` / `norm_k` (and `norm_added_*`). It applies the block's rotary embedding
itself and computes softmax(q k^T / sqrt(d)) for the target queries only, head by head.

Cost: (max(probe_steps) + 1) x |S| extra transformer calls per batch (one call per candidate
and step; every sample of a batch is probed in the same call), reported as `probe_calls`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

import training  # noqa: F401
from training import flow_matching as fm

Select = Literal["pivot", "random", "first"]

# PICO's FLUX.1-dev blocks, indices into [double blocks..., single blocks...].
FLUX_PIVOT_BLOCKS = (9, 11, 12)
DEFAULT_PROBE_STEPS = (0, 1, 2)


def default_blocks(model) -> tuple[int, ...]:
    """PICO's FLUX blocks {9, 11, 12}; a smaller FLUX or Qwen-Image (no published choice) gets the
    same relative depths (b / 19 of its block count), deduplicated and clipped."""
    n = len(_attention_blocks(model))
    if hasattr(model, "single_transformer_blocks") and n > max(FLUX_PIVOT_BLOCKS):
        return FLUX_PIVOT_BLOCKS
    return tuple(sorted({min(n - 1, round(b / 19 * n)) for b in FLUX_PIVOT_BLOCKS}))


def _attention_blocks(model) -> list:
    """The attention module of every block in order: FLUX double then single blocks; Qwen blocks."""
    blocks = list(model.transformer_blocks) + list(getattr(model, "single_transformer_blocks", []))
    return [b.attn for b in blocks]


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the candidates (population std); all-equal values give zeros."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return np.zeros_like(x) if sd < 1e-12 else (x - x.mean()) / sd


def pivot_scores(d_br: np.ndarray, d_vp: np.ndarray) -> np.ndarray:
    """S_pivot = z(D_br) - z(D_vp) across the candidates of one sample."""
    return zscore(d_br) - zscore(d_vp)


def target_attention_mass(q: torch.Tensor, k: torch.Tensor, query_rows: torch.Tensor,
                          groups: list[torch.Tensor], key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention mass of the target queries on each key group.

    q, k: (B, L, H, D) after normalisation and rotary embedding; query_rows: (B, L) bool, the
    target queries; groups: (B, L) bool masks of keys; key_mask: (B, L) bool of valid keys.
    Returns (B, G): per sample, the sum of softmax probability over each group's keys,
    averaged over target queries and heads. Computed per head so memory stays T x L.
    """
    b, _, heads, d = q.shape
    out = torch.zeros(b, len(groups), dtype=torch.float64)
    scale = 1.0 / math.sqrt(d)
    for i in range(b):
        rows = query_rows[i].nonzero().squeeze(-1)
        for h in range(heads):
            scores = (q[i, rows, h].float() @ k[i, :, h].float().T) * scale  # (T, L)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[i].to(scores.device)[None], float("-inf"))
            probs = scores.softmax(-1)
            for g, grp in enumerate(groups):
                out[i, g] += probs[:, grp[i].to(probs.device)].sum(-1).mean().double().cpu()
        out[i] /= heads
    return out


@dataclass
class AttentionRecord:
    """What the capture saw: per call (block, step), the (B, 2) masses [D_br, D_vp]."""

    calls: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)  # (block, step, masses)
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # block -> (B, heads, T, L) per call


class PivotCapture:
    """Wraps one block's attention processor; records target-query attention mass when active."""

    def __init__(self, inner, owner: "AttentionCapture", block: int):
        self.inner, self.owner, self.block = inner, owner, block

    def _hooked(self, attn, names):
        seen: dict[str, torch.Tensor] = {}
        handles = []
        for name in names:
            mod = getattr(attn, name, None)
            if mod is None:
                raise ValueError(f"block {self.block}: attention has no {name}; cannot capture queries/keys")
            handles.append(mod.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n, o.detach())))
        return seen, handles


class FluxPivotCapture(PivotCapture):
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        if not self.owner.active:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        from diffusers.models.embeddings import apply_rotary_emb

        joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        names = ["norm_q", "norm_k"] + (["norm_added_q", "norm_added_k"] if joint else [])
        seen, handles = self._hooked(attn, names)
        try:
            out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        finally:
            for h in handles:
                h.remove()
        q, k = seen["norm_q"], seen["norm_k"]
        if joint:  # double block: [text, image], as the processor concatenates them
            q = torch.cat([seen["norm_added_q"], q], dim=1)
            k = torch.cat([seen["norm_added_k"], k], dim=1)
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        self.owner.record(self.block, q, k, None)
        return out


class QwenPivotCapture(PivotCapture):
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None):
        call = lambda: self.inner(attn, hidden_states, encoder_hidden_states,  # noqa: E731
                                  encoder_hidden_states_mask, attention_mask, image_rotary_emb)
        if not self.owner.active:
            return call()
        from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

        seen, handles = self._hooked(attn, ["norm_q", "norm_k", "norm_added_q", "norm_added_k"])
        try:
            out = call()
        finally:
            for h in handles:
                h.remove()
        parts = {n: seen[n] for n in seen}
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            for n in ("norm_q", "norm_k"):
                parts[n] = apply_rotary_emb_qwen(parts[n], img_freqs, use_real=False)
            for n in ("norm_added_q", "norm_added_k"):
                parts[n] = apply_rotary_emb_qwen(parts[n], txt_freqs, use_real=False)
        q = torch.cat([parts["norm_added_q"], parts["norm_q"]], dim=1)  # [text, image], as the processor
        k = torch.cat([parts["norm_added_k"], parts["norm_k"]], dim=1)
        mask = None
        if encoder_hidden_states_mask is not None:
            n_img = parts["norm_q"].shape[1]
            mask = torch.cat([encoder_hidden_states_mask.bool(),
                              encoder_hidden_states_mask.new_ones(q.shape[0], n_img).bool()], dim=1)
        self.owner.record(self.block, q, k, mask)
        return out


class AttentionCapture:
    """Context manager: wraps the processors of `blocks`; `active` and `step` are set by the prober.

    `target_tokens` (B, N_img) bool marks the target cell among the image tokens the model sees;
    text tokens precede the image tokens in every block's joint sequence."""

    def __init__(self, model, blocks: tuple[int, ...], target_tokens: torch.Tensor):
        attns = _attention_blocks(model)
        bad = [b for b in blocks if not 0 <= b < len(attns)]
        if bad:
            raise ValueError(f"seed selection blocks {bad} out of range: the model has {len(attns)} blocks")
        self.model, self.blocks, self.target = model, tuple(blocks), target_tokens.bool().cpu()
        self.flavour = "flux" if hasattr(model, "single_transformer_blocks") else "qwen"
        self.active, self.step = False, -1
        self.result = AttentionRecord()
        self._saved: list = []

    def __enter__(self):
        cls = FluxPivotCapture if self.flavour == "flux" else QwenPivotCapture
        attns = _attention_blocks(self.model)
        for b in self.blocks:
            inner = attns[b].processor
            self._saved.append((attns[b], inner))
            attns[b].set_processor(cls(inner, self, b))
        return self

    def __exit__(self, *exc):
        for attn, inner in self._saved:
            attn.set_processor(inner)
        self._saved.clear()
        return False

    def record(self, block: int, q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None) -> None:
        b, length = q.shape[:2]
        n_img = self.target.shape[1]
        txt = length - n_img
        img_target = torch.cat([torch.zeros(b, txt, dtype=torch.bool), self.target.expand(b, -1)], dim=1)
        img_context = torch.cat([torch.zeros(b, txt, dtype=torch.bool), ~self.target.expand(b, -1)], dim=1)
        masses = target_attention_mass(q, k, img_target, [img_target, img_context], key_mask)
        self.result.calls.append((block, self.step, masses))
        self.result.shapes[block] = (b, q.shape[2], int(self.target[0].sum()), length)


@dataclass
class SeedChoice:
    """The seed chosen for one sample and why."""

    seed: int
    candidates: list[int]
    select: str
    scores: list[float] | None = None  # S_pivot per candidate
    d_br: list[float] | None = None
    d_vp: list[float] | None = None


@dataclass
class SelectionResult:
    images: list[np.ndarray]
    choices: list[SeedChoice]
    probe_calls: int  # extra transformer calls the probe made (0 unless select == "pivot")


def candidate_seeds(seed: int, n: int) -> list[int]:
    """|S| candidates: seed, seed + 1, ..., seed + n - 1 (n = 1: just the seed)."""
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    return [seed + i for i in range(n)]


def random_pick(candidates: list[int], seed: int, key: str) -> int:
    """A seeded random candidate per sample (the baseline a scorer must beat)."""
    return random.Random(f"{seed}:{key}").choice(candidates)


def probe(predictor, prep, candidates: list[int], sigmas: torch.Tensor, *, probe_steps=DEFAULT_PROBE_STEPS,
          blocks: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray, AttentionRecord]:
    """Run steps 0..max(probe_steps) of every candidate (the batch shares a candidate per call);
    returns D_br and D_vp as (B, |S|) arrays (mean over the recorded blocks and steps)."""
    steps = sorted(set(int(s) for s in probe_steps))
    if not steps or steps[0] < 0 or steps[-1] >= len(sigmas) - 1:
        raise ValueError(f"probe steps {steps} must lie in 0..{len(sigmas) - 2}")
    model = predictor.backend.model
    blocks = tuple(blocks) if blocks else default_blocks(model)
    b = len(prep.samples)
    d_br, d_vp = np.zeros((b, len(candidates))), np.zeros((b, len(candidates)))
    with AttentionCapture(model, blocks, prep.target_tokens) as cap:
        for j, seed in enumerate(candidates):
            x = predictor.initial(prep, seed)
            start = len(cap.result.calls)
            for i in range(steps[-1] + 1):
                cap.active, cap.step = i in steps, i
                x = predictor.step(prep, x, sigmas[i], sigmas[i + 1])
            cap.active = False
            masses = torch.stack([m for _, _, m in cap.result.calls[start:]]).mean(0)  # (B, 2)
            d_br[:, j], d_vp[:, j] = masses[:, 0].numpy(), masses[:, 1].numpy()
    return d_br, d_vp, cap.result


def generate_selected(predictor, samples, *, seed: int = 0, seeds: int = 1, select: Select = "first",
                      num_steps: int = 28, shift: float = 3.0, probe_steps=DEFAULT_PROBE_STEPS,
                      blocks: tuple[int, ...] | None = None) -> SelectionResult:
    """B' for each sample (one layout) with its seed chosen by `select` among `seeds` candidates.

    Every sample's final run is exactly a plain run with its chosen seed (the noise of a sample
    depends only on its own seed, not on the batch)."""
    cands = candidate_seeds(seed, seeds)
    sigmas = fm.euler_sigmas(num_steps, shift)
    prep = predictor.prepare(samples)
    calls = 0
    if select == "first" or len(cands) == 1:
        choices = [SeedChoice(cands[0], cands, select) for _ in samples]
    elif select == "random":
        choices = [SeedChoice(random_pick(cands, seed, s.key), cands, select) for s in samples]
    elif select == "pivot":
        d_br, d_vp, _ = probe(predictor, prep, cands, sigmas, probe_steps=probe_steps, blocks=blocks)
        calls = (max(probe_steps) + 1) * len(cands)
        choices = []
        for i in range(len(samples)):
            sc = pivot_scores(d_br[i], d_vp[i])
            best = int(np.argmax(sc))  # ties: the first (lowest) seed
            choices.append(SeedChoice(cands[best], cands, select, sc.tolist(), d_br[i].tolist(), d_vp[i].tolist()))
    else:
        raise ValueError(f"select must be pivot, random or first, got {select!r}")
    images = predictor.run(prep, [c.seed for c in choices], sigmas)
    return SelectionResult(images, choices, calls)
