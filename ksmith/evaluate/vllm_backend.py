"""The `vllm` backend (GPU, optional extra ``pip install 'ksmith[vllm]'``).

Imported only when chosen (``BACKENDS.register_lazy("vllm", ...)``), and vLLM itself only when
the backend is built. Written against vLLM's offline API: ``LLM(model=...)``,
``LLM.generate(prompts, SamplingParams(...))``. Scoring follows lm-eval's vLLM model:
context and continuation are tokenized separately and concatenated (as in the hf backend), the
sequence is submitted as ``{"prompt_token_ids": ids}`` with ``SamplingParams(max_tokens=1,
temperature=0, prompt_logprobs=1)``, and ``RequestOutput.prompt_logprobs`` (one entry per prompt
token, None for the first; each a dict token id -> Logprob holding the actual token and the
top-1) gives log p of every continuation token and whether it was the argmax.

vLLM serves models from disk: an in-memory (updated) model is saved to a temporary folder
first, once per backend. Drift measures (next-token distributions, hidden states) are not
offered; the runner reports them as missing with this backend.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError
from ksmith.evaluate.backend import Backend

log = logging.getLogger(__name__)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise KsmithError(
            "backend 'vllm' needs the optional vLLM package (GPU): pip install 'ksmith[vllm]'; "
            "or use --backend hf"
        ) from e
    return vllm


def _logprob_value(entry: Any) -> float:
    # vLLM >= 0.4 returns Logprob objects (.logprob, .rank); older versions plain floats.
    return float(getattr(entry, "logprob", entry))


class VLLMBackend(Backend):
    """Batched scoring and greedy generation with a vLLM engine."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int | None = None,
        device: str | None = None,
        **llm_kwargs: Any,
    ):
        vllm = _import_vllm()
        self._vllm = vllm
        self._tmp: str | None = None
        if isinstance(model, str | Path):
            path = str(model)
        else:  # an in-memory transformers model: vLLM loads from disk
            if tokenizer is None:
                raise KsmithError("backend 'vllm': an in-memory model needs its tokenizer")
            self._tmp = tempfile.mkdtemp(prefix="ksmith-vllm-")
            model.save_pretrained(self._tmp)
            tokenizer.save_pretrained(self._tmp)
            path = self._tmp
        if device not in (None, "auto") and not str(device).startswith("cuda"):
            log.warning("backend 'vllm' picks its own device; ignoring device=%s", device)
        kwargs = {"seed": 0, **llm_kwargs}
        if batch_size:
            kwargs.setdefault("max_num_seqs", int(batch_size))
        self.llm = vllm.LLM(model=path, tokenizer=path, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def __del__(self) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- tokenization (as the hf backend: context and continuation separately) ---------------

    def _context_ids(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        if not ids:  # an empty context: condition on BOS/EOS as lm-eval does
            tok = self.tokenizer
            ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
        return ids

    def _continuation_ids(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise KsmithError(f"continuation {text!r} is empty after tokenization")
        return ids

    # -- scoring ------------------------------------------------------------------------------

    def _score(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, float]]:
        """(log-likelihood, token accuracy) of each continuation after its context."""
        if not requests:
            return []
        seqs, starts = [], []
        for context, continuation in requests:
            ctx = self._context_ids(context)
            seqs.append(ctx + self._continuation_ids(continuation))
            starts.append(len(ctx))
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1)
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in seqs], params, use_tqdm=False
        )
        out = []
        for ids, start, res in zip(seqs, starts, outputs, strict=True):
            ll, hits = 0.0, 0
            for pos in range(start, len(ids)):
                entries = res.prompt_logprobs[pos]  # dict: token id -> Logprob
                ll += _logprob_value(entries[ids[pos]])
                top = max(entries, key=lambda t: _logprob_value(entries[t]))
                hits += int(top == ids[pos])
            out.append((ll, hits / (len(ids) - start)))
        return out

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [ll for ll, _ in self._score(requests)]

    def token_accuracy(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [acc for _, acc in self._score(requests)]

    # -- generation ---------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        if not prompts:
            return []
        params = self._vllm.SamplingParams(
            max_tokens=max_new_tokens, temperature=0, stop=[s for s in stop if s] or None
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": self._context_ids(p)} for p in prompts], params, use_tqdm=False
        )
        texts = []
        for res in outputs:
            text = res.outputs[0].text
            for s in stop:  # vLLM already drops the stop string; cut again to be sure
                if s and s in text:
                    text = text[: text.index(s)]
            texts.append(text)
        return texts
