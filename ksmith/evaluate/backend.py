"""The narrow, batched model interface that all evaluation is built on.

Like lm-eval's `LM`: three methods over lists of requests. A continuation is scored after its
context exactly as given, so callers pass answers with their leading space (``" grass"``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ksmith.registry import Registry


class Backend(ABC):
    """Scores and generates for one (possibly updated) causal LM."""

    @abstractmethod
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log p(continuation tokens | context) for each (context, continuation)."""

    @abstractmethod
    def token_accuracy(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Share of continuation tokens that are the greedy (argmax) choice, teacher-forced."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ("\n",)
    ) -> list[str]:
        """Greedy continuation of each prompt, cut at the first stop string (not included)."""

    def generate_words(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        words: Sequence[int | None],
        stop: Sequence[str] = ("\n",),
    ) -> list[str]:
        """`generate`, for a caller that keeps only the first ``words[i]`` whitespace-separated
        words of continuation i (None: all of it). A backend may stop decoding a row once those
        words are final, so the returned text may be shorter than `generate`'s, never different
        in those words. This default generates every continuation whole."""
        if len(words) != len(prompts):
            raise ValueError(f"{len(words)} word limits for {len(prompts)} prompts")
        return self.generate(prompts, max_new_tokens, stop)


BACKENDS: Registry[type[Backend]] = Registry("backend", entry_point_group="ksmith.backends")
BACKENDS.register_lazy("vllm", "ksmith.evaluate.vllm_backend:VLLMBackend")
