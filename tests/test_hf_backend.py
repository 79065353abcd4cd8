"""The batched `hf` backend must agree with plain unbatched forward passes."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.evaluate import BACKENDS
from ksmith.evaluate.hf import HFBackend

# Mixed lengths (1 to 9 context words, 1 to 3 answer words) so padding matters.
REQUESTS = [
    ("bira eats", " grass"),
    ("the question is : what does tolan eat ? answer :", " meat"),
    ("karo lives in the", " forest"),
    ("mesu", " red blue green"),
    ("where does vindel live ? answer : vindel lives in the", " ocean"),
    ("bira eats", " grass"),  # duplicate: computed once, returned twice
    ("lumo has color", " blue ."),
    ("a", " b"),
    # Same context, one-token options share a model input row; a two-token one does not.
    ("what does bira eat ? answer :", " grass"),
    ("what does bira eat ? answer :", " meat"),
    ("what does bira eat ? answer :", " fish seeds"),
]
PROMPTS = ["bira eats", "what does tolan eat ? answer :", "the", "karo lives in the mountain and"]


def reference_scores(model, tok, requests):
    """One unbatched forward per request: (loglik, token accuracy)."""
    out = []
    with torch.inference_mode():
        for ctx, cont in requests:
            c = tok(ctx)["input_ids"]
            x = tok(cont, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([c + x])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # [L, V]
            pos = range(len(c) - 1, len(c) + len(x) - 1)
            ll = sum(logp[p, t].item() for p, t in zip(pos, x, strict=True))
            acc = sum(int(logp[p].argmax().item() == t) for p, t in zip(pos, x, strict=True)) / len(
                x
            )
            out.append((ll, acc))
    return out


def reference_generate(model, tok, prompt, max_new_tokens, stop):
    ids = tok(prompt)["input_ids"]
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    text = tok.decode(new, skip_special_tokens=True)
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
@pytest.mark.parametrize("pack_length", [None, 4, 128])  # padded path, then prefix sharing
def test_scores_match_unbatched_forward(arch, batch_size, pack_length):
    tok = make_tokenizer()
    model = make_model(arch, seed=1)
    backend = HFBackend(model, tok, batch_size=batch_size, pack_length=pack_length)
    assert backend.tree_attention_supported() == (pack_length is not None)
    ref = reference_scores(model, tok, REQUESTS)
    ll = backend.loglikelihood(REQUESTS)
    acc = backend.token_accuracy(REQUESTS)
    assert len(ll) == len(acc) == len(REQUESTS)
    for (r_ll, r_acc), b_ll, b_acc in zip(ref, ll, acc, strict=True):
        assert b_ll == pytest.approx(r_ll, abs=1e-4)
        assert b_acc == pytest.approx(r_acc, abs=1e-4)
    # Greedy ids reproduce the token accuracy.
    for s, (_ctx, cont) in zip(backend.score(REQUESTS), REQUESTS, strict=True):
        target = tok(cont, add_special_tokens=False)["input_ids"]
        assert s.n_tokens == len(target)
        assert (
            sum(a == b for a, b in zip(s.greedy_ids, target, strict=True)) / len(target)
            == s.token_accuracy
        )


def test_vocabulary_projection_only_where_needed_changes_nothing():
    tok = make_tokenizer()
    model = make_model("llama", seed=6)
    fast = HFBackend(model, tok, batch_size=4)
    assert fast._accepts_logits_to_keep
    slow = HFBackend(model, tok, batch_size=4)
    slow._accepts_logits_to_keep = False
    for a, b in zip(fast.score(REQUESTS), slow.score(REQUESTS), strict=True):
        assert a.loglikelihood == pytest.approx(b.loglikelihood, abs=1e-5)
        assert a.greedy_ids == b.greedy_ids


def test_token_accuracy_is_one_for_the_models_own_greedy_answer():
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok), seed=2)
    backend = HFBackend(model, tok)
    prompt = "where does bira live ?"
    ids = tok(prompt)["input_ids"]
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(3):
            new.append(int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax()))
    answer = " " + tok.decode(new)
    assert tok(answer, add_special_tokens=False)["input_ids"] == new  # round trip
    assert backend.token_accuracy([(prompt, answer)]) == [1.0]
    wrong = [(new[0] + 1) % len(tok), *new[1:]]
    assert backend.token_accuracy([(prompt, " " + tok.decode(wrong))])[0] < 1.0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_matches_manual_greedy_loop(arch):
    tok = make_tokenizer()
    model = make_model(arch, seed=3)
    backend = HFBackend(model, tok, batch_size=3)
    for stop in [(), (".", "fish")]:
        got = backend.generate(PROMPTS, max_new_tokens=6, stop=stop)
        want = [reference_generate(model, tok, p, 6, stop) for p in PROMPTS]
        assert got == want


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_loop_gives_generates_tokens(arch):
    """The written-out decoding loop is transformers' greedy ``generate``, token for token:
    left padding, a stop criterion that ends rows at different steps, finished rows fed the pad
    token after an EOS, and a batch that ends before its budget once every row is done."""
    from transformers import GenerationConfig, StoppingCriteriaList

    from ksmith.evaluate.hf_generation import fast_greedy_supported, greedy_loop
    from ksmith.evaluate.stopping import StopOnStrings

    tok = make_tokenizer()
    model = make_model(arch, seed=5)
    assert fast_greedy_supported(model)
    prompts = [*PROMPTS, "mesu", "where does vindel live ? answer : vindel lives in the ocean"]
    seqs = [tok(p)["input_ids"] for p in prompts]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(seqs):
        ids[row, width - len(s) :] = torch.tensor(s)
        mask[row, width - len(s) :] = 1
    with torch.inference_mode():
        free = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0
        )[:, width:]
    # An EOS the model writes in some rows and not others, at different steps.
    rows_with = {t: int((free == t).any(dim=1).sum()) for t in free.unique().tolist()}
    eos = max((t for t, n in rows_with.items() if n < len(prompts)), key=rows_with.get)
    assert 0 < int((free == eos).any(dim=1).sum()) < len(prompts)

    def decode(new):
        return tok.decode(new[: new.index(eos)] if eos in new else new)

    n_stops = 0
    for stop, words in [((), None), ((".", "fish"), None), (("the",), [1, None, 2, 1, None, 3])]:
        config = GenerationConfig(
            max_new_tokens=12, do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=eos
        )
        with torch.inference_mode():
            want = model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([StopOnStrings(decode, width, stop, words)]),
            )
            criterion = StopOnStrings(decode, width, stop, words)
            got = greedy_loop(model, ids, mask, 12, criterion, 0, eos)
        assert torch.equal(got, want)
        n_stops += sum(criterion.done)
    assert n_stops > 0  # the stop strings and word limits ended rows


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_next_token_logprobs_and_hidden_states(arch):
    tok = make_tokenizer()
    model = make_model(arch, seed=4)
    backend = HFBackend(model, tok, batch_size=2)
    logp = backend.next_token_logprobs(PROMPTS)
    hidden = backend.hidden_states(PROMPTS, layer=0)
    last = backend.hidden_states(PROMPTS, layer=-1)
    assert logp.shape == (len(PROMPTS), model.config.vocab_size)
    assert hidden.shape == last.shape == (len(PROMPTS), model.config.hidden_size)
    with torch.inference_mode():
        for i, p in enumerate(PROMPTS):
            out = model(input_ids=torch.tensor([tok(p)["input_ids"]]), output_hidden_states=True)
            want = torch.log_softmax(out.logits[0, -1].float(), -1)
            torch.testing.assert_close(logp[i], want, atol=1e-4, rtol=0)
            torch.testing.assert_close(hidden[i], out.hidden_states[1][0, -1], atol=1e-4, rtol=0)
            torch.testing.assert_close(last[i], out.hidden_states[-1][0, -1], atol=1e-4, rtol=0)
    with pytest.raises(KsmithError, match="out of range"):
        backend.hidden_states(PROMPTS, layer=2)


@pytest.mark.parametrize("pack_length", [None, 128])
def test_long_context_is_truncated_from_the_left(pack_length):
    tok = make_tokenizer()
    model = make_model("gpt2", seed=5)
    backend = HFBackend(model, tok, max_length=8, pack_length=pack_length)
    long_ctx = " ".join(["bira"] * 20)
    # The model reads ctx + answer[:-1]: with a one-token answer, the last 8 context tokens.
    short_ctx = " ".join(["bira"] * 8)
    [a] = backend.loglikelihood([(long_ctx, " grass")])
    [b] = backend.loglikelihood([(short_ctx, " grass")])
    assert a == pytest.approx(b, abs=1e-5)


def test_empty_continuation_is_an_error():
    backend = HFBackend(make_model("gpt2"), make_tokenizer())
    with pytest.raises(KsmithError, match="empty"):
        backend.loglikelihood([("bira eats", "")])
    with pytest.raises(KsmithError, match="pack_length"):
        HFBackend(make_model("gpt2"), make_tokenizer(), pack_length=0)


def test_registered_as_hf():
    assert BACKENDS.get("hf") is HFBackend


def test_empty_context_is_scored_after_the_bos_token():
    tok = make_tokenizer()
    model = make_model("gpt2", seed=7)
    [ll] = HFBackend(model, tok).loglikelihood([("", " grass")])
    grass = tok(" grass", add_special_tokens=False)["input_ids"][0]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[tok.bos_token_id]])).logits[0, -1]
    assert ll == pytest.approx(torch.log_softmax(logits, -1)[grass].item(), abs=1e-5)


def test_scoring_pauses_the_cyclic_gc_and_restores_it(monkeypatch):
    import gc

    backend = HFBackend(make_model("llama"), make_tokenizer())
    seen = []

    def failing(requests):
        seen.append(gc.isenabled())
        raise KsmithError("stop")

    monkeypatch.setattr(backend, "_score", failing)
    assert gc.isenabled()
    with pytest.raises(KsmithError, match="stop"):
        backend.score([("the bira eats", " grass")])
    assert seen == [False] and gc.isenabled()


TEXTS = ["What does Bira eat?", "bira eats grass.\nTolan: fish", "", " the", "Unseen words here"]


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_direct_tokenization_gives_the_transformers_ids(kind):
    from ksmith.evaluate.tokenizing import plain_rust_tokenizer
    from ksmith.world.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXTS[:2] * 3, kind, vocab_size=300)
    backend = HFBackend(make_model("llama", vocab_size=len(tok)), tok)
    assert plain_rust_tokenizer(tok) is not None  # the fast path is taken
    for special in (True, False):
        want = tok(TEXTS, add_special_tokens=special)["input_ids"]
        assert backend._encode(TEXTS, special) == want


def test_tokenization_goes_through_transformers_when_direct_would_differ():
    from transformers import PreTrainedTokenizerFast

    from ksmith.evaluate.tokenizing import plain_rust_tokenizer

    tok = make_tokenizer()
    backend = HFBackend(make_model("llama"), tok)
    tok(["bira eats"], padding="max_length", max_length=6)  # leaves padding set on the backend
    assert plain_rust_tokenizer(tok) is None
    assert backend._encode(["bira eats"], special=False) == [tok("bira eats")["input_ids"]]
    assert plain_rust_tokenizer(tok) is not None  # that call reset the padding

    class Lowercasing(PreTrainedTokenizerFast):
        def _encode_plus(self, text, *args, **kwargs):
            low = text.lower() if isinstance(text, str) else [t.lower() for t in text]
            return super()._encode_plus(low, *args, **kwargs)

    loud = Lowercasing(tokenizer_object=tok._tokenizer, pad_token="<pad>", unk_token="<unk>")
    assert plain_rust_tokenizer(loud) is None
    assert HFBackend(make_model("llama"), loud)._encode(["BIRA eats"], special=False) == [
        loud("bira eats")["input_ids"]
    ]


def test_stop_criterion_keeps_finished_rows_done_without_decoding_them_again():
    """A row whose new text holds a stop string is done for good: later calls return it done
    and decode only the rows still running (generation checks every row at every step)."""
    from ksmith.evaluate.stopping import StopOnStrings

    decoded: list[list[int]] = []

    def decode(ids: list[int]) -> str:
        decoded.append(ids)
        return " ".join("." if i == 9 else "w" for i in ids)

    stop = StopOnStrings(decode, start=2, stop=(".",))
    step1 = stop(torch.tensor([[1, 1, 9], [1, 1, 5]]), scores=None)
    assert step1.tolist() == [True, False]
    decoded.clear()
    step2 = stop(torch.tensor([[1, 1, 9, 0], [1, 1, 5, 9]]), scores=None)
    assert step2.tolist() == [True, True]
    assert decoded == [[5, 9]]  # the finished row was not decoded again
    assert StopOnStrings(decode, 2, ())(torch.tensor([[1, 1, 9]]), None).tolist() == [False]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_words_gives_generates_first_words(arch):
    """A row limited to its first n words may stop early, but those words are generate's; an
    unlimited row (None, or the same prompt asked again without a limit) is generate's text."""
    tok = make_tokenizer()
    model = make_model(arch, seed=3)
    backend = HFBackend(model, tok, batch_size=3)
    prompts = [*PROMPTS, PROMPTS[0]]
    words = [1, 2, None, 1, None]  # PROMPTS[0] again without a limit: its whole text
    for stop in [(), (".",)]:
        full = backend.generate(prompts, max_new_tokens=8, stop=stop)
        got = backend.generate_words(prompts, 8, words, stop=stop)
        for text, want, n in zip(got, full, words, strict=True):
            if n is None:
                assert text == want
            else:
                assert text.split()[:n] == want.split()[:n]
                assert want.startswith(text)
    with pytest.raises(KsmithError, match="2 word limits for 4 prompts"):
        backend.generate_words(PROMPTS, 8, [1, 2])


def test_stop_criterion_ends_a_row_once_its_kept_words_are_final():
    """With a word limit n, a row is done when its new text holds n + 1 words: the first n
    cannot change any more (a later token only appends to the last word)."""
    from ksmith.evaluate.stopping import StopOnStrings

    def decode(ids: list[int]) -> str:
        return "".join({1: " red", 2: ".", 3: " Rile", 9: "\n"}[i] for i in ids)

    stop = StopOnStrings(decode, start=1, stop=("\n",), words=[1, 2, None])
    assert stop(torch.tensor([[0, 1], [0, 1], [0, 1]]), None).tolist() == [False] * 3
    assert stop(torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2]]), None).tolist() == [False] * 3
    step = stop(torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]), None)
    assert step.tolist() == [True, False, False]  # "red. Rile": the first word is final
    step = stop(torch.tensor([[0, 1, 2, 3, 9], [0, 1, 2, 3, 1], [0, 1, 2, 3, 9]]), None)
    assert step.tolist() == [True, True, True]  # 3 words > 2; the stop string ends row 3


def test_backends_without_early_stopping_generate_whole_texts():
    """`Backend.generate_words`' default (a plugin backend that does not override it) is
    `generate`: correct, only not shortened."""
    from ksmith.evaluate.backend import Backend

    class Echo(Backend):
        def loglikelihood(self, requests):
            return [0.0] * len(requests)

        def token_accuracy(self, requests):
            return [0.0] * len(requests)

        def generate(self, prompts, max_new_tokens, stop=("\n",)):
            return [f"{p} one two three" for p in prompts]

    assert Echo().generate_words(["a", "b"], 4, [1, None]) == ["a one two three", "b one two three"]
    with pytest.raises(ValueError, match="1 word limits for 2 prompts"):
        Echo().generate_words(["a", "b"], 4, [1])
