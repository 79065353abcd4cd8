"""GRACE (arXiv 2211.11031): a codebook beside one layer, deferring only within its radii.

Defining properties: an input outside every deferral radius gets exactly the unedited output;
an edited key's module output is its trained value; the codebook follows Algorithm 1's add /
expand / split rules; the codebook survives `ksmith update` -> `ksmith evaluate`.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.methods import Request, TextPair, UpdateProblem
from ksmith.methods.artifacts import applied_update, read_update
from ksmith.methods.attach import attached
from ksmith.methods.grace import GRACE, RADIUS_RTOL, Codebook, _key_and_output
from ksmith.methods.runner import run_update
from ksmith.methods.train_utils import answer_logprobs, encode_pairs
from ksmith.models.arch import get_module, layer_path

EDITS = [("bira eats", "meat"), ("tolan lives in the", "desert")]
PROBES = ["karo eats fish", "what does mesu eat ? answer :", "vindel lives in the ocean"]


def _problem(edits=EDITS, mode="batch") -> UpdateProblem:
    reqs = tuple(Request(f"r{i}", p.split()[0], "rel", p, "x", a) for i, (p, a) in enumerate(edits))
    plus = tuple(TextPair(r.prompt, r.new_object or "", r.request_id) for r in reqs)
    return UpdateProblem(kind="edit", requests=reqs, plus=plus, mode=mode)


def _queries(model, tok, texts, module) -> torch.Tensor:
    """The module's input at every position of every text: (N, d_in)."""
    seen = []
    handle = module.register_forward_hook(lambda _m, args, _o: seen.append(args[0][0]))
    try:
        with torch.no_grad():
            for t in texts:
                model(input_ids=torch.tensor([tok(t)["input_ids"]]))
    finally:
        handle.remove()
    return torch.cat(seen).float()


def _logits(model, tok, texts):
    with torch.no_grad():
        return [model(input_ids=torch.tensor([tok(t)["input_ids"]])).logits for t in texts]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_outputs_unchanged_outside_every_radius(arch):
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok))
    module = get_module(model, layer_path(model, 1, "mlp_out"))
    keys = torch.stack([_key_and_output(model, tok, TextPair(p, a), module)[0] for p, a in EDITS])
    q = _queries(model, tok, PROBES, module)
    eps = 0.5 * float(torch.cdist(q, keys).min())  # every probe position is outside
    before = _logits(model, tok, PROBES + [p for p, _ in EDITS])
    torch.manual_seed(0)
    GRACE(GRACE.Params(eps_init=eps, n_iter=5)).apply(model, tok, _problem())
    (book,) = attached(model)
    dist, idx = book.nearest(q)
    assert (dist > book.epsilons[idx] * (1 + RADIUS_RTOL)).all()
    after = _logits(model, tok, PROBES + [p for p, _ in EDITS])
    for b, a in zip(before[: len(PROBES)], after[: len(PROBES)], strict=True):
        assert torch.equal(b, a)  # bit for bit: the layer ran as before
    for b, a in zip(before[len(PROBES) :], after[len(PROBES) :], strict=True):
        assert not torch.equal(b[0, -1], a[0, -1])  # the edited prompts defer to the codebook
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    book.detach()
    assert all(torch.equal(b, a) for b, a in zip(before, _logits(model, tok, PROBES), strict=False))


def test_edited_key_maps_to_its_trained_value():
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    module = get_module(model, "model.layers.1.mlp.down_proj")
    prompt, answer = EDITS[0]
    batch = encode_pairs(tok, [prompt], [answer])
    with torch.no_grad():
        loss0 = -float(answer_logprobs(model, batch, reduction="mean")[0])
    torch.manual_seed(0)
    res = GRACE(GRACE.Params(eps_init=1e-3, n_iter=20)).apply(model, tok, _problem(EDITS[:1]))
    (book,) = attached(model)
    assert len(book) == 1 and book.labels == [answer]
    with torch.no_grad():
        loss1 = -float(answer_logprobs(model, batch, reduction="mean")[0])
    assert loss1 < loss0 and res.log["final_loss"][0] == pytest.approx(loss1, rel=1e-4)
    seen = []
    handle = module.register_forward_hook(lambda _m, _a, out: seen.append(out[0, -1]))
    with torch.no_grad():
        model(input_ids=torch.tensor([tok(prompt)["input_ids"]]))
    handle.remove()
    assert torch.equal(seen[0], book.values[0])  # the module now outputs the trained value
    _key, own = _key_and_output(model, tok, TextPair(prompt, answer), module)
    assert not torch.equal(own, book.values[0])  # its own output is still the unedited one


def _book(model):
    book = Codebook.empty(model, "model.layers.0.mlp.down_proj")
    d_in, d_out = book.keys.shape[1], book.values.shape[1]
    e = torch.eye(d_in)
    return book, e, torch.zeros(d_out)


def test_the_query_that_set_a_radius_stays_inside_it_under_float_rounding():
    """Expansion puts its own query on the boundary (ε = d): asked again with hidden states a
    few float32 roundings away (another batch), it is still answered by the codebook; a query
    clearly beyond the radius is not."""
    model = make_model("llama")
    book, e, v = _book(model)
    book.insert(e[0], "a", torch.ones_like(v), GRACE.Params(eps_init=1.0))
    q = e[0] + 1.5 * e[2]
    assert book.insert(q, "a", torch.ones_like(v), GRACE.Params(eps_init=1.0))[1] == "expand"
    out = torch.zeros(1, 3, v.numel())
    h = torch.stack([q, e[0] + 1.5 * (1 + 2e-6) * e[2], e[0] + 1.6 * e[2]])[None]
    got = book._forward_hook(None, (h,), out)
    assert got[0, :2].eq(1).all()  # on the boundary, and just past it by rounding: the value
    assert got[0, 2].eq(0).all()  # 7% past it: the module's own output


@pytest.mark.parametrize("expand", ["coverage", "moving_average"])
def test_codebook_add_expand_split_rules(expand):
    """Algorithm 1: no overlap adds; same-label overlap grows ε to d; a different label splits
    both radii to d/2."""
    model = make_model("llama")
    book, e, v = _book(model)
    p = GRACE.Params(eps_init=1.0, eps_expand=expand)
    assert book.insert(e[0], "a", v, p) == (0, "add")
    assert book.insert(3 * e[1], "b", v, p) == (1, "add")  # d = 3.16 > 1 + 1
    assert book.insert(e[0] + 0.5 * e[2], "a", v, p) == (0, "covered")  # inside ε
    assert book.insert(e[0] + 1.5 * e[2], "a", v, p) == (0, "expand")  # 1 < d <= 2, same label
    assert float(book.epsilons[0]) == pytest.approx(1.5)
    if expand == "moving_average":
        torch.testing.assert_close(book.keys[0], e[0] + 0.75 * e[2])
    else:
        torch.testing.assert_close(book.keys[0], e[0])
    j, action = book.insert(3 * e[1] + 1.2 * e[3], "c", v, p)  # near key 1, other label
    assert (j, action) == (2, "split")
    assert float(book.epsilons[1]) == pytest.approx(0.6 - 1e-5)
    assert float(book.epsilons[2]) == pytest.approx(0.6)
    assert book.labels == ["a", "b", "c"] and len(book) == 3


def test_sequential_edits_share_one_codebook():
    tok = make_tokenizer()
    model = make_model("gpt2", vocab_size=len(tok))
    method = GRACE(GRACE.Params(eps_init=1e-4, n_iter=2))
    res = method.apply(model, tok, _problem(mode="sequential"))
    assert set(res.log) == {"step0", "step1"}
    (book,) = attached(model)
    assert len(book) == 2 and book.module_path == "transformer.h.1.mlp.c_proj"


def test_runner_saves_codebook_and_applied_update_reattaches_it(tmp_path):
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    problems = {g: _problem(EDITS[g : g + 1]) for g in (0, 1)}
    method = GRACE(GRACE.Params(eps_init=1e-3, n_iter=3))
    info = run_update(model, tok, method, problems, tmp_path / "u")
    assert attached(model) == []  # detached after each group
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())
    g0 = info["groups"][0]
    assert g0["artifact"] == "attachment" and g0["changed_tensors"] == ["attach/0:grace"]
    d_in, d_out = 64, 32  # llama hidden 32, MLP 64
    assert g0["changed_parameters"] == d_in + d_out + 1
    meta = json.loads((tmp_path / "u" / "g0" / "attach" / "0" / "attachment.json").read_text())
    assert meta["kind"] == "grace" and meta["labels"] == ["meat"]

    # the same edit in memory, and through the saved folder: identical outputs
    fresh = make_model("llama", vocab_size=len(tok))
    torch.manual_seed(0)
    GRACE(GRACE.Params(eps_init=1e-3, n_iter=3)).apply(fresh, tok, problems[0])
    want = _logits(fresh, tok, [EDITS[0][0]])[0]
    base_logits = _logits(model, tok, [EDITS[0][0]])[0]
    with applied_update(model, tmp_path / "u", 0) as (updated, _):
        got = _logits(updated, tok, [EDITS[0][0]])[0]
        with pytest.raises(KsmithError, match="grace memory attached by forward hooks"):
            updated.save_pretrained(tmp_path / "copy")  # would silently drop the codebook
    model.save_pretrained(tmp_path / "base")  # detached: saving works again
    torch.testing.assert_close(got, want)
    assert not torch.equal(got, base_logits)
    assert attached(model) == []
    assert torch.equal(_logits(model, tok, [EDITS[0][0]])[0], base_logits)


def _requests_from_probes(dataset, config):
    """requests.parquet for the world fixture's config, one request per direct cloze probe."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ksmith.data.schema import REQUEST_SCHEMA

    probes = pq.read_table(dataset / "data" / config / "test.parquet").to_pylist()
    rows = [
        {"group": d["group"], "request_id": d["request_id"], "kind": "edit", "level": "leaf",
         "subject": d["subject"], "relation": d["relation"], "object": d["answer_before"],
         "new_object": d["answer_after"], "prompt": d["prompt"], "plus_prompts": [d["prompt"]],
         "plus_answers": [d["answer_after"]], "minus_prompts": [], "minus_answers": []}
        for d in probes
        if d["type"] == "direct" and d["format"] == "cloze"
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)
    pq.write_table(table, dataset / "data" / config / "requests.parquet")


@pytest.mark.slow  # two CLI runs on a tiny model: a few seconds
def test_ksmith_update_then_evaluate_round_trip(tmp_path):
    """The CLI path: `ksmith update --method grace` writes the codebook beside an empty delta,
    `ksmith evaluate` loads the base model and re-attaches it: the edited probe changes."""
    import pyarrow.parquet as pq
    from world_fixtures import write_world_dataset

    from ksmith.cli import main

    config = "biology.edit.leaf.k1"
    dataset = write_world_dataset(tmp_path / "dataset", configs=(config,), groups=1)
    _requests_from_probes(dataset, config)
    tok = make_tokenizer()
    model_dir = tmp_path / "model"
    make_model("llama", vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    upd, res = tmp_path / "upd", tmp_path / "res"
    common = ["--model", str(model_dir), "--dataset", str(dataset), "--config", config]
    assert main(["--threads", "1", "update", *common, "--method", "grace", "--groups", "0",
                 "--set", "n_iter=5", "--device", "cpu", "--out", str(upd)]) == 0  # fmt: skip
    info = read_update(upd)
    assert info["groups"][0]["artifact"] == "attachment"
    assert (upd / "g0" / "attach" / "0" / "tensors.safetensors").is_file()
    assert main(["--threads", "1", "evaluate", *common, "--update", str(upd), "--no-cache",
                 "--device", "cpu", "--out", str(res)]) == 0  # fmt: skip
    preds = pq.read_table(res / "predictions.parquet").to_pylist()
    direct = {p["stage"]: p for p in preds if p["probe_id"].endswith("direct.cloze.0")}
    assert not direct["before"]["correct"] and direct["after"]["correct"]
    metrics = json.loads((res / "metrics.json").read_text())
    assert metrics["metrics"]["efficacy@cloze"]["value"] == 1.0


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_spec_file_resolves(model_type):
    from ksmith.methods import get_method
    from ksmith.methods.params import resolve_params

    params = resolve_params(get_method("grace"), model_type=model_type)
    assert isinstance(params, GRACE.Params) and params.eps_init == 1.0


def test_non_finite_codebook_stops_the_run_without_output(tmp_path):
    from ksmith.methods import UpdateMethod, UpdateResult

    class _NaNBook(UpdateMethod):
        name, kind, paper = "nanbook", "edit", "test"

        def apply_batch(self, model, tokenizer, problem):
            book = Codebook.empty(model, "model.layers.1.mlp.down_proj")
            book._add(torch.zeros(64), torch.full((32,), float("nan")), 1.0, "meat")
            return UpdateResult()

    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    with pytest.raises(KsmithError, match="non-finite values in its values"):
        run_update(model, tok, _NaNBook(), {0: _problem(EDITS[:1])}, tmp_path / "u")
    assert not (tmp_path / "u").exists() and attached(model) == []
