"""Batched scoring vs one forward pass per probe, measured in one run.

Scores the same (prompt, answer) probes three ways on the world model:
  batched  -- the `hf` backend (distinct model inputs; with prefix sharing, each node of their
              prefix trie computed once in packed sequences under a tree mask, else
              length-sorted right-padded batches; inference_mode);
  looped   -- one unbatched forward pass per probe, as EasyEdit-style evaluators do;
  forward  -- bare forward passes over the very model inputs the backend builds (packed ids,
              position ids, tree masks and `logits_to_keep`, or the padded batches).
Each side is timed as the best of `--repeats` runs, the sides taking turns. Prints probes/s
for batched and looped (`ratio=` batched/looped, target >= 20) and the backend's time against
the bare forward (`overhead=` backend time / forward time, target <= 1.5; it counts
tokenization, the trie, the masks and the log-softmax). On the packed path the backend also
runs the last block's attention output projection and MLP only where logits are read
(`LastBlockWhereRead`), and on CPU its linear layers run on oneDNN (`ksmith.evaluate.onednn`),
so its forward passes take less than the bare ones; `overhead_same_forward=` compares it with
bare forward passes computed the same way, which isolates the work outside the model. Token counts: `real_tokens` (sum
of distinct row lengths, what the padded path computes without padding), `trie_nodes` (distinct
prefixes, the least any exact method computes), `model_tokens` (positions the forwards run,
padding and repeated ancestor paths included). The last line is one `key=value` summary with
`ratio=` first.

    python bench/evaluate.py [--model WORLD_MODEL_DIR] [--dataset DATASET_DIR] [--n 2000]
                             [--pack-length 64 (0: padded path)] [--clock wall|cpu]

Without --model, a model of the default world-model shape (specs/world/default.yaml) is made
from its config with a word tokenizer over the probe texts (scores are then random, speeds
are not). Without --dataset, probes are synthetic sentences of mixed lengths.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ksmith.evaluate.hf import HFBackend
from ksmith.evaluate.packing import LastBlockWhereRead, build_trie, continuation_nodes
from ksmith.runtime import keep_freed_memory

WORDS = (
    "Bira Tolan Mesu Karo Vindel Lumo Sapi Dorat Fenu Gali eats lives in the forest desert "
    "ocean river grass meat fish seeds is a kind of What does eat? color red blue green "
    "reproduces by eggs litters buds True or false: not"
).split()


def synthetic_probes(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [
        (
            " ".join(rng.choices(WORDS, k=rng.randint(3, 14))),
            " " + " ".join(rng.choices(WORDS, k=rng.randint(1, 3))),
        )
        for _ in range(n)
    ]


def dataset_probes(root: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    from ksmith.world.probes import probe_rows

    requests = set()
    for row in probe_rows(root):
        if row["format"] == "mcq":
            requests.update((row["prompt"], " " + o) for o in row["options"])
        else:
            requests.add((row["prompt"], " " + row["answer_before"]))
    requests = sorted(requests)
    random.Random(seed).shuffle(requests)
    return requests[:n]


def make_model(texts: list[str]):
    from ksmith.world.spec import load_world_spec
    from ksmith.world.tokenizer import train_tokenizer
    from ksmith.world.training import build_model

    spec = load_world_spec()
    tokenizer = train_tokenizer(texts, spec.tokenizer, spec.bpe_vocab_size)
    return build_model(spec, tokenizer).eval(), tokenizer


def looped(model, tokenizer, requests) -> list[float]:
    """One forward pass per probe: log p(answer | prompt), EasyEdit style."""
    out = []
    with torch.inference_mode():
        for ctx, cont in requests:
            c = tokenizer(ctx)["input_ids"]
            x = tokenizer(cont, add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([c + x])).logits[0, len(c) - 1 : -1]
            logp = torch.log_softmax(logits.float(), -1)
            out.append(logp.gather(-1, torch.tensor(x)[:, None]).sum().item())
    return out


def forward_batches(backend: HFBackend, requests) -> tuple[list[dict], dict[str, int]]:
    """The keyword arguments of every forward pass `HFBackend.score` runs on `requests`, and
    token counts (real tokens, trie nodes, positions run)."""
    cont, rows, members = backend.scoring_inputs(list(dict.fromkeys(requests)))
    trie = build_trie(rows)
    counts = {"real_tokens": sum(len(r) for r in rows), "trie_nodes": len(trie)}
    if backend.tree_attention_supported():
        _, _, _, keep = continuation_nodes(trie, members, cont)
        batches = [kwargs for kwargs, _ in backend.packed_forwards(trie, keep)]
    else:
        rows.sort(key=lambda s: -len(s))
        batches = []
        for start in range(0, len(rows), backend.batch_size):
            ids, mask = backend._right_padded(rows[start : start + backend.batch_size])
            batches.append({"input_ids": ids, "attention_mask": mask})
    counts["model_tokens"] = sum(b["input_ids"].numel() for b in batches)
    return batches, counts


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_of(fns: dict[str, Callable[[], object]], repeats: int, clock: str = "wall"):
    """Fastest of `repeats` runs of each function, in seconds. The functions take turns (one
    run of each per round), so a noisy spell on a shared machine slows all sides alike.
    ``clock="cpu"`` counts this process's CPU time, which on a loaded machine estimates what
    the wall time would be on an idle one (single thread)."""
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = now()
            fn()
            times[name].append(now() - t0)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="world model folder (ksmith pretrain)")
    ap.add_argument("--dataset", type=Path, help="dataset folder (ksmith generate)")
    ap.add_argument("--n", type=int, default=2000, help="probes scored by the batched backend")
    ap.add_argument("--n-looped", type=int, default=300, help="probes scored one by one")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--pack-length", type=int, default=64, help="packed sequence length; 0 = padded path"
    )
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time (default) or process CPU time (for loaded machines; use one thread)",
    )
    args = ap.parse_args()
    keep_freed_memory()  # as the ksmith command and pipeline workers do

    requests = dataset_probes(args.dataset, args.n) if args.dataset else synthetic_probes(args.n)
    if args.model:
        from ksmith.models import load_model

        model, tokenizer = load_model(args.model, device="cpu")
        source = str(args.model)
    else:
        model, tokenizer = make_model([c + x for c, x in requests])
        source = "default-shape"
    pack = None if args.pack_length == 0 else args.pack_length
    backend = HFBackend(model, tokenizer, batch_size=args.batch_size, pack_length=pack)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model={source} type={model.config.model_type} params={n_params} "
        f"threads={torch.get_num_threads()} probes={len(requests)}"
    )

    some = requests[: args.n_looped]
    batches, counts = forward_batches(backend, requests)

    def forward_only(as_backend: bool = False):
        """Plain forward passes; or, with `as_backend`, computing what the backend's do."""
        packed = as_backend and backend.tree_attention_supported()
        kernels = backend._batched_kernels() if as_backend else contextlib.nullcontext()
        with torch.inference_mode(), kernels, LastBlockWhereRead(model) as last_block:
            for kwargs in batches:
                last_block.where = kwargs["logits_to_keep"] if packed else None
                model(**kwargs)

    backend.score(requests[:64])  # warm-up
    forward_only()
    best = best_of(
        {
            "batched": lambda: backend.score(requests),
            "looped": lambda: looped(model, tokenizer, some),
            "forward": forward_only,
            "forward_same": lambda: forward_only(True),
        },
        args.repeats,
        args.clock,
    )
    t_batched, t_forward, t_same = best["batched"], best["forward"], best["forward_same"]
    batched_ps = len(requests) / t_batched
    looped_ps = len(some) / best["looped"]
    # The two ways agree (same numbers, different speed).
    ref = looped(model, tokenizer, some[:20])
    got = backend.loglikelihood(some[:20])
    max_diff = max(abs(a - b) for a, b in zip(ref, got, strict=True))
    # ... and with the padded path, on every probe (greedy tokens too).
    padded = HFBackend(model, tokenizer, batch_size=args.batch_size, pack_length=None)
    pairs = list(zip(backend.score(requests), padded.score(requests), strict=True))
    diff_padded = max(abs(a.loglikelihood - b.loglikelihood) for a, b in pairs)
    greedy_same = all(a.greedy_ids == b.greedy_ids for a, b in pairs)
    print(
        f"batched: {batched_ps:.0f} probes/s   looped: {looped_ps:.1f} probes/s   "
        f"max |loglik diff| = {max_diff:.2e} (vs looped), {diff_padded:.2e} (vs padded, all); "
        f"same greedy tokens: {greedy_same}"
    )
    overhead, overhead_same = t_batched / t_forward, t_batched / t_same
    print(
        f"tokens: real={counts['real_tokens']} trie_nodes={counts['trie_nodes']} "
        f"run={counts['model_tokens']} in {len(batches)} forwards   "
        f"backend: {t_batched * 1e3:.0f} ms   bare forward: {t_forward * 1e3:.0f} ms "
        f"({t_same * 1e3:.0f} ms computed as the backend does)   "
        f"overhead={overhead:.2f} overhead_same_forward={overhead_same:.2f}"
    )
    print(
        f"ratio={batched_ps / looped_ps:.1f} batched_probes_s={batched_ps:.0f} "
        f"looped_probes_s={looped_ps:.1f} overhead={overhead:.2f} "
        f"overhead_same_forward={overhead_same:.2f} "
        f"real_tokens={counts['real_tokens']} trie_nodes={counts['trie_nodes']} "
        f"model_tokens={counts['model_tokens']} forwards={len(batches)} "
        f"packed={int(backend.tree_attention_supported())} pack_length={backend.pack_length} "
        f"probes={len(requests)} batch_size={args.batch_size} "
        f"threads={torch.get_num_threads()} clock={args.clock} max_abs_diff={max_diff:.1e} "
        f"max_abs_diff_padded={diff_padded:.1e} greedy_same={int(greedy_same)}"
    )


if __name__ == "__main__":
    main()
