"""FT-M and FT-L: defining properties on tiny models, plus the shared loss helpers."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods import Request, TextPair, UpdateProblem, get_method
from ksmith.methods.ft import last_token_target_logprobs
from ksmith.methods.train_utils import IGNORE, answer_logprobs, encode_pairs, pair_logprobs

LAYER_OF = {"gpt2": "transformer.h.1.mlp.c_proj.", "llama": "model.layers.1.mlp.down_proj."}


def problem(answer="meat"):
    subjects = ["bira", "tolan", "mesu", "karo"]
    reqs = tuple(
        Request(f"g0.r{i}", s, "eats", f"{s} eats", "grass", answer) for i, s in enumerate(subjects)
    )
    plus = tuple(
        TextPair(p, answer, r.request_id)
        for r in reqs
        for p in (r.prompt, f"what does {r.subject} eat ? answer :")
    )
    return UpdateProblem(kind="edit", requests=reqs, plus=plus)


def target_logp(model, tok, prob):
    with torch.no_grad():
        prompts = [p.prompt for p in prob.plus]
        return pair_logprobs(model, tok, prompts, [p.answer for p in prob.plus]).mean().item()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ft_m_trains_only_declared_layer_and_fits_target(arch):
    model, tok = make_model(arch, layers=3), make_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prob = problem()
    lp0 = target_logp(model, tok, prob)
    cls = get_method("ft_m")
    torch.manual_seed(0)
    res = cls(cls.Params(steps=15, lr=2e-2, batch_size=4)).apply(model, tok, prob)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(LAYER_OF[arch]) for n in changed)  # middle layer of 3
    assert res.log["loss"][-1] < res.log["loss"][0]
    # A random tiny model's LM head bounds how far one layer can move a logit: ask for a clear
    # gain, not a fit (efficacy on a trained world model is checked end to end).
    assert target_logp(model, tok, prob) > lp0 + 0.2
    # No training state left behind.
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_answer_loss_gives_no_gradient_to_prompt_positions():
    """FT-M's masking: logits at positions predicting prompt (or padding) tokens get zero
    gradient; positions predicting answer tokens get some."""
    model, tok = make_model("llama"), make_tokenizer()
    batch = encode_pairs(tok, ["what does bira eat ? answer :", "tolan eats"], ["red meat", "fish"])
    captured = {}

    def hook(module, args, out):
        out.logits.retain_grad()
        captured["logits"] = out.logits

    handle = model.register_forward_hook(hook)
    try:
        answer_logprobs(model, batch, reduction="mean").sum().backward()
    finally:
        handle.remove()
    grad = captured["logits"].grad.abs().sum(-1)  # (B, T)
    # position t predicts token t+1; it carries loss only when token t+1 is an answer token.
    predicts_answer = torch.zeros_like(batch.answer_mask)
    predicts_answer[:, :-1] = batch.answer_mask[:, 1:]
    assert (grad[~predicts_answer] == 0).all()
    assert (grad[predicts_answer] > 0).all()
    assert batch.answer_mask.sum(1).tolist() == [2, 1]
    assert (batch.labels[batch.attention_mask == 0] == IGNORE).all()


def test_ft_l_last_token_objective():
    """FT-L scores every target token under the prompt's last-position distribution."""
    model, tok = make_model("gpt2"), make_tokenizer()
    prompts, answers = ["bira eats", "what does tolan eat ? answer :"], ["red meat", "fish"]
    batch = encode_pairs(tok, prompts, answers)
    got = last_token_target_logprobs(model, batch)
    for b, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        ids = tok(p)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
        want = logp[tok(" " + a, add_special_tokens=False)["input_ids"]].mean()
        torch.testing.assert_close(got[b], want)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ft_l_respects_norm_constraint(arch):
    model, tok = make_model(arch, layers=3), make_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cls = get_method("ft_l")
    eps = 1e-3
    torch.manual_seed(0)
    res = cls(cls.Params(norm_constraint=eps, lr=1e-2, steps=5)).apply(model, tok, problem())
    assert res.log["loss"][-1] < res.log["loss"][0]
    worst = 0.0
    for n, p in model.named_parameters():
        diff = (p - before[n]).abs().max().item()
        if not n.startswith(LAYER_OF[arch]):
            assert diff == 0, n
        worst = max(worst, diff)
    assert eps * 0.99 <= worst <= eps * (1 + 1e-4)  # the constraint binds, and holds
    free = make_model(arch, layers=3)
    cls(cls.Params(norm_constraint=None, lr=1e-2, steps=5)).apply(free, tok, problem())
    unconstrained = max((p - before[n]).abs().max().item() for n, p in free.named_parameters())
    assert unconstrained > 2 * eps


def test_ft_m_declared_layers_and_retain_term():
    model, tok = make_model("llama", layers=4), make_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cls = get_method("ft_m")
    prob = problem()
    prob = UpdateProblem(
        kind="edit", requests=prob.requests, plus=prob.plus,
        minus=(TextPair("karo lives in", "forest"), TextPair("vindel eats", "fish")),
    )  # fmt: skip
    params = cls.Params(layers=(0, -1), module="attn_out", steps=3, retain_weight=1.0)
    cls(params).apply(model, tok, prob)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"model.layers.0.self_attn.o_proj.weight",
                       "model.layers.3.self_attn.o_proj.weight"}  # fmt: skip


def test_ft_m_sequential_matches_one_by_one():
    """Sequential mode = FT-M applied to each request in turn on the same model."""
    tok = make_tokenizer()
    cls = get_method("ft_m")
    params = cls.Params(steps=3, lr=5e-3)
    prob = problem()
    seq = make_model("gpt2")
    torch.manual_seed(0)
    cls(params).apply(seq, tok, UpdateProblem(**{**prob.__dict__, "mode": "sequential"}))
    manual = make_model("gpt2")
    torch.manual_seed(0)
    for sub in prob.subproblems():
        cls(params).apply(manual, tok, sub)
    for (n, a), b in zip(seq.named_parameters(), manual.parameters(), strict=True):
        assert torch.equal(a, b), n
    batch = make_model("gpt2")
    cls(params).apply(batch, tok, prob)
    assert not all(
        torch.equal(a, b) for a, b in zip(batch.parameters(), seq.parameters(), strict=True)
    )


def test_fit_loop_encodes_each_batch_once_and_trains_as_before(monkeypatch):
    """fit_pairs tokenizes each distinct batch once (every epoch sees the same batches) and
    trains exactly as encoding every step did: the same epoch losses and weights."""
    import ksmith.methods.fit as fit

    def run(cached: bool):
        model, tok = make_model("llama", seed=1), make_tokenizer()
        prob = problem()
        calls = []

        def counting(*args, **kwargs):
            calls.append(1)
            return encode_pairs(*args, **kwargs)

        monkeypatch.setattr(fit, "encode_pairs", counting)
        params = list(model.model.layers[1].mlp.parameters())
        p = fit.FitParams(steps=4, batch_size=3, early_stop_loss=0.0, retain_weight=0.5)
        minus = [TextPair("karo lives in the", "forest"), TextPair("mesu eats", "seeds")]
        if cached:
            losses = fit.fit_pairs(
                model,
                tok,
                list(prob.plus),
                minus,
                params,
                p,
                lambda m, b: answer_logprobs(m, b, reduction="mean"),
            )
        else:  # the loop as it was: encode every step
            opt = torch.optim.Adam(params, lr=p.lr)
            retain = fit.cycle_batches(minus, p.batch_size)
            losses = []
            for _ in range(p.steps):
                total, n = 0.0, 0
                for chunk in fit.chunks(list(prob.plus), p.batch_size):
                    batch = counting(tok, *fit.pairs_text(chunk))
                    target = -answer_logprobs(model, batch, reduction="mean").mean()
                    kept = counting(tok, *fit.pairs_text(next(retain)))
                    loss = (
                        target
                        + p.retain_weight * -answer_logprobs(model, kept, reduction="mean").mean()
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, n = total + float(target.detach()) * len(chunk), n + len(chunk)
                losses.append(total / n)
        return losses, [w.detach().clone() for w in params], len(calls)

    losses, weights, calls = run(cached=True)
    ref_losses, ref_weights, ref_calls = run(cached=False)
    assert losses == ref_losses
    assert all(torch.equal(a, b) for a, b in zip(weights, ref_weights, strict=True))
    assert ref_calls == 4 * 3 * 2  # 4 epochs x 3 batches, Q+ and retain
    assert calls == 3 + 2  # 3 Q+ batches; retain batches cycle through [m0, m1] and [m1, m0]
