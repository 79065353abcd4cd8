"""The `hf` backend: batched scoring and greedy generation with a transformers causal LM.

Conventions follow lm-eval's ``HFLM``: a (context, continuation) pair is scored by tokenizing
the two SEPARATELY and concatenating the ids, so the continuation's tokens are exactly those of
the answer however the tokenizer would merge across the boundary; requests are sorted by length
(longest first) and batched with right padding for scoring and left padding for generation; all
forward passes run under ``torch.inference_mode``. Identical requests are computed once.

Scoring shares common prefixes when the model allows it (`tree_attention_supported`): the
distinct model inputs form a prefix trie, each trie node is computed once inside packed
sequences under a tree mask (`ksmith.evaluate.packing`), and the vocabulary projection runs only
at nodes where a continuation token is predicted. Other models use the padded batches.

Greedy generation is `ksmith.evaluate.hf_generation`; what drift metrics need (the next-token
distribution after a prompt, a block's last-token hidden state) `ksmith.evaluate.hf_readouts`.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ksmith.errors import KsmithError
from ksmith.evaluate.backend import BACKENDS, Backend
from ksmith.evaluate.continuations import ContinuationScore, continuation_scores
from ksmith.evaluate.hf_generation import HFGeneration, chunks
from ksmith.evaluate.hf_readouts import HFReadouts
from ksmith.evaluate.onednn import onednn_linears
from ksmith.evaluate.packing import (
    PrefixTrie,
    build_trie,
    continuation_nodes,
    pack_trie,
    score_tree_nodes,
    supports_tree_attention,
    tree_forwards,
)
from ksmith.evaluate.tokenizing import encode_texts

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class HFBackend(HFGeneration, HFReadouts, Backend):
    """Batched evaluation of a transformers causal LM (CPU or GPU).

    `batch_size` is the number of rows of a padded scoring batch. With prefix sharing, a packed
    sequence holds at most ``max(pack_length, 2 * longest row)`` tokens (the attention mask is
    L x L; twice the longest row leaves room for new nodes behind a repeated ancestor path), and
    a forward pass holds about as many tokens as the widest padded batch would
    (`batch_size` x longest row), with a mask no larger than that batch's (or 64 MiB).
    ``onednn`` (default on) scores on CPU with float32 linear layers computed by oneDNN
    instead of MKL (`ksmith.evaluate.onednn`: the same arithmetic, up to twice as fast here).
    ``pack_length=None`` turns prefix sharing off. The default 64 was the fastest of 48..128
    on the world model (CPU, 2 threads, measured side by side: 5-10% ahead of 128, whose
    L x L attention costs more once the last MLP runs only where logits are read; earlier
    256 was ~10% slower than 128, and 32 repeats too many ancestor paths).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        pack_length: int | None = 64,
        onednn: bool = True,
    ):
        if batch_size < 1:
            raise KsmithError(f"batch_size must be >= 1, got {batch_size}")
        if pack_length is not None and pack_length < 1:
            raise KsmithError(f"pack_length must be >= 1 or None, got {pack_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pack_length = pack_length
        self.onednn = onednn
        if device is not None:
            model.to(device)
        self.device = next(model.parameters()).device
        self.max_length = max_length or self._model_max_length()
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id: int = pad
        self.eos_id: int | None = tokenizer.eos_token_id
        # The token that stands in for an empty context (lm-eval uses EOT the same way).
        specials = (tokenizer.bos_token_id, self.eos_id, self.pad_id)
        self.prefix_id: int = next(t for t in specials if t is not None)
        # transformers >= 4.45 can project only chosen positions onto the vocabulary.
        self._accepts_logits_to_keep = (
            "logits_to_keep" in inspect.signature(model.forward).parameters
        )

    @classmethod
    def from_path(
        cls,
        path_or_id: str | Path,
        *,
        device: str = "auto",
        dtype: str | torch.dtype | None = None,
        batch_size: int = 64,
        pack_length: int | None = 64,
    ) -> HFBackend:
        """Load a model with `ksmith.models.load_model` and wrap it."""
        from ksmith.models.loading import load_model

        model, tokenizer = load_model(path_or_id, device=device, dtype=dtype)
        return cls(model, tokenizer, batch_size=batch_size, pack_length=pack_length)

    def _model_max_length(self) -> int:
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    # -- tokenization -----------------------------------------------------------------------

    def _encode(self, texts: Sequence[str], special: bool) -> list[list[int]]:
        return encode_texts(self.tokenizer, texts, special)

    def _encode_contexts(self, texts: Sequence[str]) -> list[list[int]]:
        return [ids or [self.prefix_id] for ids in self._encode(texts, special=True)]

    # -- scoring ----------------------------------------------------------------------------

    def token_logprobs(self, prompt: str, continuation: str) -> list[tuple[float, float, float]]:
        """Per token of `continuation`, teacher-forced after `prompt` and tokenized as every
        scoring call tokenizes (context and continuation separately): (log p of the token, the
        best log p at that position, the best log p of any other token). The margins tell
        near-ties from decisions (the leaderboard's re-execution audit)."""
        import torch

        ctx = self._encode_contexts([prompt])[0]
        cont = self._encode([continuation], special=False)[0]
        if not cont:
            return []
        ids = torch.tensor([ctx + cont], device=self.device)
        with torch.inference_mode():
            logp = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
        out = []
        for t, tok in enumerate(cont):
            row = logp[len(ctx) - 1 + t]  # predicts continuation token t
            top2 = torch.topk(row, 2)
            target = float(row[tok])
            other = float(top2.values[1] if int(top2.indices[0]) == tok else top2.values[0])
            out.append((target, float(top2.values[0]), other))
        return out

    def score(self, requests: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """Log-likelihood, token accuracy and greedy tokens of each continuation, in order.

        Requests whose model input is the same token sequence (the options of a multiple-choice
        question whose answers are one token each, as lm-eval groups them) share one row.
        """
        with _gc_paused():
            return self._score(requests)

    def _score(self, requests: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        first = dict.fromkeys(map(tuple, requests))  # type: ignore[arg-type]
        unique: list[tuple[str, str]] = list(first)
        continuations, rows, members = self.scoring_inputs(unique)
        results: list[ContinuationScore | None] = [None] * len(unique)
        with torch.inference_mode(), self._batched_kernels():
            if rows and self.tree_attention_supported():
                self._score_packed(rows, members, continuations, results)
            else:
                order = sorted(range(len(rows)), key=lambda r: -len(rows[r]))
                for batch in chunks(order, self.batch_size):
                    items = [(b, continuations[i]) for b, r in enumerate(batch) for i in members[r]]
                    scores = self._score_batch([rows[r] for r in batch], items)
                    targets = [i for r in batch for i in members[r]]
                    for i, sc in zip(targets, scores, strict=True):
                        results[i] = sc
        first.update(zip(unique, results, strict=True))
        return [first[r] for r in map(tuple, requests)]  # type: ignore[misc]

    def _batched_kernels(self) -> contextlib.AbstractContextManager:
        """oneDNN for float32 linear layers on CPU, if enabled (`ksmith.evaluate.onednn`)."""
        if self.onednn and self.device.type == "cpu":
            return onednn_linears(self.model)
        return contextlib.nullcontext()

    def scoring_inputs(
        self, unique: Sequence[tuple[str, str]]
    ) -> tuple[list[list[int]], list[tuple[int, ...]], list[list[int]]]:
        """Tokenize distinct requests: the continuations' ids, and the distinct model inputs
        with the requests each serves (`scoring_rows`)."""
        contexts = self._encode_contexts([c for c, _ in unique])
        continuations = self._encode([x for _, x in unique], special=False)
        return continuations, *self.scoring_rows(unique, contexts, continuations)

    def scoring_rows(
        self,
        requests: Sequence[tuple[str, str]],
        contexts: Sequence[list[int]],
        continuations: Sequence[list[int]],
    ) -> tuple[list[tuple[int, ...]], list[list[int]]]:
        """The distinct model inputs (ctx + cont[:-1], cut to the window from the left) and, for
        each, the indices of the requests it serves."""
        window = self.max_length
        row_of: dict[tuple[int, ...], int] = {}
        rows: list[tuple[int, ...]] = []  # distinct model inputs
        members: list[list[int]] = []  # row -> indices into `requests`
        for i, (ctx, cont) in enumerate(zip(contexts, continuations, strict=True)):
            if not cont or len(cont) > window:
                ctx_text, cont_text = requests[i]
                if not cont:
                    raise KsmithError(f"continuation {cont_text!r} (after {ctx_text!r}) is empty")
                raise KsmithError(f"continuation {cont_text!r} is longer than the model window")
            # The model reads ctx + cont[:-1] and predicts cont; truncate from the left.
            key = (*ctx, *cont[:-1])
            if len(key) > window:
                key = key[-window:]
            r = row_of.get(key)
            if r is None:
                r = row_of[key] = len(rows)
                rows.append(key)
                members.append([])
            members[r].append(i)
        return rows, members

    def tree_attention_supported(self) -> bool:
        """Whether scoring shares prefixes: `pack_length` is set and the model takes a custom
        4D mask, per-token position ids and a boolean `logits_to_keep`."""
        return (
            self.pack_length is not None
            and self._accepts_logits_to_keep
            and supports_tree_attention(self.model.config, self.max_length)
        )

    def packed_forwards(
        self, trie: PrefixTrie, keep: np.ndarray
    ) -> Iterator[tuple[dict[str, torch.Tensor | bool], np.ndarray]]:
        """The forward passes that compute every node of `trie` once (see `tree_forwards`)."""
        assert self.pack_length is not None
        deepest = max(trie.depths) + 1
        seqs = pack_trie(trie, max(self.pack_length, 2 * deepest))
        width = max(len(s) for s in seqs)
        # An additive float mask serves both: eager adds it to the scores, and sdpa runs ~15%
        # faster with it than with a boolean mask, which it converts on every call (measured).
        mask_dtype = self.model.dtype
        itemsize = torch.empty((), dtype=mask_dtype).element_size()
        # About as many tokens per forward as the widest padded batch would hold, and a mask
        # no larger than that batch's own boolean 4D mask (or 64 MiB).
        by_tokens = self.batch_size * deepest // width
        by_memory = max(self.batch_size * deepest**2, 2**26) // (width**2 * itemsize)
        per_forward = max(1, min(by_tokens, by_memory))
        batches = chunks(seqs, per_forward)
        return tree_forwards(trie, batches, keep, self.pad_id, mask_dtype, self.device)

    def _score_packed(
        self,
        rows: Sequence[tuple[int, ...]],
        members: Sequence[list[int]],
        continuations: Sequence[list[int]],
        results: list[ContinuationScore | None],
    ) -> None:
        """Score every request through the prefix trie of `rows`, filling `results`."""
        trie = build_trie(rows)
        owners, node, target, keep = continuation_nodes(trie, members, continuations)
        forwards = self.packed_forwards(trie, keep)
        token_ll, greedy = score_tree_nodes(self.model, forwards, node, target, len(trie))
        lengths = [len(continuations[i]) for i in owners]
        scores = continuation_scores(token_ll, greedy, torch.from_numpy(target), lengths)
        for i, sc in zip(owners, scores, strict=True):
            results[i] = sc

    def _right_padded(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _score_batch(
        self, inputs: Sequence[Sequence[int]], items: Sequence[tuple[int, list[int]]]
    ) -> list[ContinuationScore]:
        """Score each (row, continuation) item; a continuation of k tokens is predicted at its
        row's last k positions."""
        ids, mask = self._right_padded(inputs)
        rows, cols, targets = [], [], []
        for b, cont in items:
            k, length = len(cont), len(inputs[b])
            rows.extend([b] * k)
            cols.extend(range(length - k, length))
            targets.extend(cont)
        # Project onto the vocabulary only where a continuation token is predicted.
        keep = sorted(set(cols))
        kwargs = {}
        if self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = torch.tensor(keep, device=ids.device)
            where = {c: j for j, c in enumerate(keep)}
            cols = [where[c] for c in cols]
        logits = self.model(input_ids=ids, attention_mask=mask, **kwargs).logits  # [B, L', V]
        dev = logits.device
        picked = logits[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]  # [T, V]
        logp = torch.log_softmax(picked.float(), dim=-1)  # [T, V]
        target = torch.tensor(targets, device=dev)  # [T]
        token_ll = logp.gather(-1, target[:, None]).squeeze(-1)  # [T]
        greedy = logp.argmax(-1)  # [T]
        return continuation_scores(token_ll, greedy, target, [len(c) for _, c in items])

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [s.loglikelihood for s in self.score(requests)]

    def token_accuracy(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [s.token_accuracy for s in self.score(requests)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block. Scoring allocates many small
    lists and creates no cycles; with a large heap (a loaded dataset) the full collections
    those allocations trigger cost more than the scoring itself (measured: 430 ms pauses in
    a 200 ms call). Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


if "hf" not in BACKENDS:
    BACKENDS.register("hf")(HFBackend)
