"""A leaner training step for Llama-architecture world models (spec ``train_kernels: fused``).

The world model is a tiny transformer (two blocks of width 128 in the default), so a training
step on CPU spends almost half its time outside matrix products: transformers' forward builds a
4-D attention mask and recomputes the rotary tables every step, runs three projections where one
would do, and projects every padded position onto the vocabulary; PyTorch's default AdamW on CPU
updates each parameter with about ten small kernels. `fused_loss` computes the same loss as
``LlamaForCausalLM(input_ids, attention_mask, labels).loss`` on a right-padded batch with fewer,
larger kernels:

- q, k and v come from one product with the three weights stacked, gate and up from another;
- the rotary cos / sin tables are computed once per model (positions 0..max_position-1);
- attention is causal with no padding mask: with right padding a real token only ever attends
  to earlier tokens, all real (a pad's own output is never used);
- the final norm and the vocabulary projection run only at positions that predict a real token.

The function is the model's (same parameters, same equations: RMSNorm, rotate-half RoPE, SDPA
with the module's scale, SiLU-gated MLP, mean token cross-entropy), so the trained weights are an
ordinary ``LlamaForCausalLM``; the arithmetic is grouped differently, so the last bits, and over
20,000 steps the trained model, differ from ``train_kernels: transformers``. `fused_optimizer`
adds PyTorch's fused AdamW (one kernel per parameter). ``tests/test_world_fused.py`` checks the
loss and gradients against transformers'; ``bench/world_forward.py`` measures the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]


def unsupported(model: Any) -> str | None:
    """Why `fused_loss` cannot stand in for `model`'s forward, or None when it can."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "llama":
        return "not a Llama model"
    heads = config.num_attention_heads
    checks = {
        "attention_bias": bool(getattr(config, "attention_bias", False)),
        "mlp_bias": bool(getattr(config, "mlp_bias", False)),
        "hidden_act": getattr(config, "hidden_act", "silu") != "silu",
        "num_key_value_heads": getattr(config, "num_key_value_heads", heads) != heads,
        "head_dim": getattr(config, "head_dim", config.hidden_size // heads)
        != config.hidden_size // heads,
        "pretraining_tp": getattr(config, "pretraining_tp", 1) != 1,
        "attention_dropout": float(getattr(config, "attention_dropout", 0.0) or 0.0) != 0.0,
        "rope": _rope_type(config) != "default",
    }
    bad = [k for k, v in checks.items() if v]
    return f"config field(s) {', '.join(bad)} not supported" if bad else None


def _rope_type(config: Any) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not params:
        return "default"
    return str(params.get("rope_type", params.get("type", "default")))


def fused_loss(model: Any) -> LossFn:
    """``loss(ids, lengths)``: the mean next-token cross-entropy of `model` on the right-padded
    batch `ids` ``[B, T]`` whose row b holds ``lengths[b]`` real tokens; equal (up to float
    rounding) to transformers' loss with labels -100 at the pads. Raises ValueError for a model
    it does not support (`unsupported`)."""
    reason = unsupported(model)
    if reason is not None:
        raise ValueError(f"train_kernels fused: {reason}")
    config = model.config
    inner = model.model
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    rotary = inner.rotary_emb
    positions = torch.arange(config.max_position_embeddings, dtype=torch.float32)
    inv_freq = rotary.inv_freq.to(dtype=torch.float32, device="cpu")
    freqs = positions[:, None] * inv_freq[None, :]  # [P, head_dim / 2]
    table = torch.cat((freqs, freqs), dim=-1)  # [P, head_dim]
    scaling = float(getattr(rotary, "attention_scaling", 1.0))
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    cos_table = (table.cos() * scaling).to(device=device, dtype=dtype)
    sin_table = (table.sin() * scaling).to(device=device, dtype=dtype)

    def rms(x: torch.Tensor, norm: Any) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * h.to(x.dtype)

    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def loss(ids: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        batch, width = ids.shape
        cos, sin = cos_table[:width], sin_table[:width]  # [T, head_dim], broadcast over B, H
        h = F.embedding(ids, inner.embed_tokens.weight)  # [B, T, D]
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            x = rms(h, layer.input_layernorm)
            qkv_w = torch.cat((attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight))
            qkv = F.linear(x, qkv_w).view(batch, width, 3, heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, T, head_dim]
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)
            h = h + F.linear(o.transpose(1, 2).reshape(batch, width, -1), attn.o_proj.weight)
            x = rms(h, layer.post_attention_layernorm)
            gate_up_w = torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight))
            gate, up = F.linear(x, gate_up_w).chunk(2, dim=-1)  # [B, T, I] each
            h = h + F.linear(F.silu(gate) * up, mlp.down_proj.weight)
        predicts = torch.zeros((batch, width), dtype=torch.bool, device=ids.device)
        for row, n in enumerate(lengths):
            predicts[row, : max(0, n - 1)] = True  # position t predicts real token t + 1
        targets = ids[:, 1:][predicts[:, :-1]]  # [N]
        logits = F.linear(rms(h[predicts], inner.norm), model.lm_head.weight)  # [N, V]
        return F.cross_entropy(logits.float(), targets)

    return loss


def fused_optimizer(
    params: Any, *, lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel (one per parameter tensor)."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
