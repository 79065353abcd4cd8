"""What drift metrics read from the `hf` backend's model (`HFBackend` inherits it): the
next-token distribution after a prompt (KL) and a block's last-token hidden state (CKA)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ksmith.errors import KsmithError
from ksmith.evaluate.hf_generation import chunks


class HFReadouts:
    """`next_token_logprobs` and `hidden_states` of `HFBackend`; uses its model, batch size,
    window, context encoding and right padding."""

    def _last_token_forward(
        self, prompts: Sequence[str], hidden: bool
    ) -> Iterator[tuple[Sequence[int], torch.Tensor, object]]:
        encoded = [ids[-self.max_length :] for ids in self._encode_contexts(prompts)]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        with torch.inference_mode():
            for batch in chunks(order, self.batch_size):
                seqs = [encoded[i] for i in batch]
                ids, mask = self._right_padded(seqs)
                out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
                last = torch.tensor([len(s) - 1 for s in seqs], device=ids.device)  # [B]
                yield batch, last, out

    def next_token_logprobs(self, prompts: Sequence[str]) -> torch.Tensor:
        """log p(. | prompt) over the vocabulary for each prompt: float32 [n, vocab], on CPU."""
        result: torch.Tensor | None = None
        for batch, last, out in self._last_token_forward(prompts, hidden=False):
            logits = out.logits  # type: ignore[attr-defined]  # [B, L, V]
            rows = torch.arange(len(batch), device=logits.device)
            logp = torch.log_softmax(logits[rows, last].float(), dim=-1).cpu()  # [B, V]
            if result is None:
                result = torch.empty((len(prompts), logp.shape[-1]), dtype=torch.float32)
            result[torch.tensor(list(batch))] = logp
        return result if result is not None else torch.empty((0, 0))

    def hidden_states(self, prompts: Sequence[str], layer: int) -> torch.Tensor:
        """The last prompt token's hidden state after block `layer`: float32 [n, hidden], CPU.

        `layer` counts transformer blocks from 0; negative values count from the last block
        (``-1`` is the model's final hidden state, as transformers returns it).
        """
        n_layers = int(getattr(self.model.config, "num_hidden_layers", 0) or 0)
        if n_layers and not -n_layers <= layer < n_layers:
            raise KsmithError(f"layer {layer} out of range: the model has {n_layers} layers")
        index = layer + 1 if layer >= 0 else layer  # hidden_states[0] is the embedding output
        result: torch.Tensor | None = None
        for batch, last, out in self._last_token_forward(prompts, hidden=True):
            h = out.hidden_states[index]  # type: ignore[attr-defined]  # [B, L, H]
            rows = torch.arange(len(batch), device=h.device)
            vec = h[rows, last].float().cpu()  # [B, H]
            if result is None:
                result = torch.empty((len(prompts), vec.shape[-1]), dtype=torch.float32)
            result[torch.tensor(list(batch))] = vec
        return result if result is not None else torch.empty((0, 0))
