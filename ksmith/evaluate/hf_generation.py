"""Greedy generation for the `hf` backend (`HFBackend` inherits it): prompts batched with left
padding, longest first, decoded by transformers' ``generate`` with a per-row stopping criterion
(`ksmith.evaluate.stopping`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ksmith.errors import KsmithError
from ksmith.evaluate.stopping import StopOnStrings, cut_at_stop


def chunks(seq: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """`seq` in consecutive slices of `size` (the last may be shorter)."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class HFGeneration:
    """`generate` and `generate_words` of `HFBackend`; uses its model, tokenizer, batch size,
    device, pad / EOS ids, window and context encoding."""

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        """Greedy continuations, batched with left padding, cut at the first stop string."""
        return self._generate(prompts, max_new_tokens, stop, [None] * len(prompts))

    def generate_words(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        words: Sequence[int | None],
        stop: Sequence[str] = ("\n",),
    ) -> list[str]:
        """`generate`, each row stopping once its first ``words[i]`` words are final (it holds
        one word more: later tokens only append). The batches are `generate`'s, and a row's
        computation does not depend on when another row stops, so those words are the ones
        `generate` gives; the batch ends when all its rows have stopped."""
        if len(words) != len(prompts):
            raise KsmithError(f"{len(words)} word limits for {len(prompts)} prompts")
        return self._generate(prompts, max_new_tokens, stop, words)

    def _generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        stop: Sequence[str],
        words: Sequence[int | None],
    ) -> list[str]:
        from transformers import GenerationConfig, StoppingCriteriaList

        if max_new_tokens < 1:
            raise KsmithError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        unique = list(dict.fromkeys(prompts))
        limit: dict[str, int | None] = {}  # a prompt asked more than once: its largest need
        for p, n in zip(prompts, words, strict=True):
            if p not in limit:
                limit[p] = n
            elif limit[p] is not None:
                limit[p] = None if n is None else max(n, limit[p])  # type: ignore[type-var]
        window = self.max_length - max_new_tokens
        if window < 1:
            raise KsmithError(f"max_new_tokens={max_new_tokens} fills the model window")
        encoded = [ids[-window:] for ids in self._encode_contexts(unique)]
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_id,
        )
        texts: list[str] = [""] * len(unique)
        order = sorted(range(len(unique)), key=lambda i: -len(encoded[i]))
        with torch.inference_mode():
            for batch in chunks(order, self.batch_size):
                seqs = [encoded[i] for i in batch]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for row, s in enumerate(seqs):
                    ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                    mask[row, width - len(s) :] = 1
                row_words = [limit[unique[i]] for i in batch]
                criteria = StoppingCriteriaList(
                    [StopOnStrings(self._decode_new, width, tuple(stop), row_words)]
                )
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    generation_config=config,
                    stopping_criteria=criteria,
                )
                for row, i in enumerate(batch):
                    texts[i] = cut_at_stop(self._decode_new(out[row, width:].tolist()), stop)
        by_prompt = dict(zip(unique, texts, strict=True))
        return [by_prompt[p] for p in prompts]

    def _decode_new(self, new_ids: list[int]) -> str:
        if self.eos_id is not None and self.eos_id in new_ids:
            new_ids = new_ids[: new_ids.index(self.eos_id)]
        return self.decode(new_ids)
