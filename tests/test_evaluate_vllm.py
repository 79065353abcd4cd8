"""The vllm backend: lazy, with a clear error when vLLM is missing; its output parsing is
checked against vLLM's documented RequestOutput structure with a stand-in module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from dataclasses import dataclass

import pytest

from ksmith.errors import KsmithError
from tests.conftest import make_tokenizer

needs_no_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here"
)


def test_importing_ksmith_evaluate_does_not_import_vllm():
    code = (
        "import sys, ksmith.evaluate, ksmith.evaluate.runner; "
        "from ksmith.evaluate import BACKENDS; assert 'vllm' in BACKENDS; "
        "print(sorted(m for m in ('vllm', 'lm_eval', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@needs_no_vllm
def test_choosing_vllm_without_vllm_is_a_clear_error():
    from ksmith.evaluate.backend import BACKENDS
    from ksmith.evaluate.runner import EvalOptions, make_backend

    cls = BACKENDS.get("vllm")  # the module imports fine; vLLM itself is needed only to build
    with pytest.raises(KsmithError, match=r"pip install 'ksmith\[vllm\]'"):
        cls("some/model")
    with pytest.raises(KsmithError, match="vllm"):
        make_backend(object(), None, EvalOptions(backend="vllm"))


@dataclass
class Logprob:
    logprob: float
    rank: int


class FakeLLM:
    """Stand-in for vllm.LLM: prompt_logprobs as documented (None first, then per position a
    dict token id -> Logprob with the actual token and the top-1). The model prefers token
    id 10 everywhere; every other token costs -2."""

    def __init__(self, model, tokenizer, **kwargs):
        self.kwargs = kwargs
        self.tok = make_tokenizer()

    def get_tokenizer(self):
        return self.tok

    def generate(self, prompts, params, use_tqdm=False):
        outs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            lps = [None]
            for t in ids[1:]:
                entry = {t: Logprob(-0.1 if t == 10 else -2.0, 1 if t == 10 else 3)}
                entry.setdefault(10, Logprob(-0.1, 1))
                lps.append(entry)
            text = " grass\nmore" if params.kw.get("stop") else " grass grass"
            outs.append(
                types.SimpleNamespace(
                    prompt_logprobs=lps, outputs=[types.SimpleNamespace(text=text)]
                )
            )
        return outs


class FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw


def test_vllm_backend_parses_prompt_logprobs(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from ksmith.evaluate.vllm_backend import VLLMBackend

    backend = VLLMBackend("some/model", batch_size=4)
    assert backend.llm.kwargs["max_num_seqs"] == 4
    tok = backend.tokenizer
    ten = tok.convert_ids_to_tokens(10)
    other = "grass" if ten != "grass" else "meat"
    (ll,) = backend.loglikelihood([("the bira eats", f" {ten} {other}")])
    assert ll == pytest.approx(-0.1 - 2.0)
    (acc,) = backend.token_accuracy([("the bira eats", f" {ten} {other}")])
    assert acc == 0.5
    assert backend.generate(["the bira eats"], max_new_tokens=4) == [" grass"]
    assert backend.generate(["the bira eats"], max_new_tokens=4, stop=()) == [" grass grass"]
