"""Per-item teacher-forced token scores, what every unlearning metric reads
(`ksmith.evaluate.unlearning`), and `score_items`, which computes them with a transformers
causal LM, scoring ``prompt + " " + answer`` as evaluation does (docs/contracts.md, section 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ksmith.errors import KsmithError


@dataclass(frozen=True)
class ItemScores:
    """Teacher-forced scores of one answer after its prompt.

    `logprobs[t]` = log p(y_t | x, y_<t) for each answer token; `hits[t]` = whether y_t is the
    argmax of that distribution; `text` = the answer text (zlib attack)."""

    logprobs: tuple[float, ...]
    hits: tuple[bool, ...]
    text: str = ""

    def __post_init__(self):
        if not self.logprobs or len(self.logprobs) != len(self.hits):
            raise KsmithError(
                f"ItemScores of {self.text!r}: need one log-prob and one hit per answer token "
                f"(got {len(self.logprobs)} and {len(self.hits)})"
            )

    @property
    def avg_loss(self) -> float:
        """Mean token negative log-likelihood."""
        return -float(np.mean(self.logprobs))

    @property
    def prob(self) -> float:
        """exp(-avg_loss): the length-normalised probability P(a|q)^(1/|a|)."""
        return math.exp(-self.avg_loss)


def score_items(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 32
) -> list[ItemScores]:
    """`ItemScores` of each (prompt, answer): context and " " + answer tokenized separately and
    concatenated (the `hf` backend's convention), right-padded batches, one forward pass each."""
    import torch

    from ksmith.evaluate.tokenizing import encode_texts

    if len(prompts) != len(answers):
        raise KsmithError(f"score_items: {len(prompts)} prompts but {len(answers)} answers")
    specials = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    prefix = next((t for t in specials if t is not None), 0)  # stands in for an empty context
    ctx = [ids or [prefix] for ids in encode_texts(tokenizer, list(prompts), special=True)]
    cont = encode_texts(tokenizer, [" " + a for a in answers], special=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dev = next(model.parameters()).device
    out: list[ItemScores] = []
    with torch.inference_mode():
        for lo in range(0, len(ctx), batch_size):
            seqs = [list(c) + list(a) for c, a in zip(ctx[lo:lo + batch_size],
                                                        cont[lo:lo + batch_size], strict=True)]  # fmt: skip
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            logp = torch.log_softmax(
                model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float(), -1
            )  # [B, L, V]
            for i, s in enumerate(seqs):
                n_ctx, n = len(ctx[lo + i]), len(cont[lo + i])
                pos = torch.arange(n_ctx - 1, n_ctx - 1 + n)  # positions predicting the answer
                target = torch.tensor(s[n_ctx:])
                lp = logp[i, pos].cpu()  # [n, V]
                out.append(ItemScores(
                    tuple(lp.gather(-1, target[:, None]).squeeze(-1).tolist()),
                    tuple((lp.argmax(-1) == target).tolist()),
                    answers[lo + i],
                ))  # fmt: skip
    return out
