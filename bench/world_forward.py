"""A world-model training step: transformers' forward and AdamW against `train_kernels: fused`.

    nice -n 19 python bench/world_forward.py DATASET [--steps 400] [--rounds 3] [--spec YAML]

DATASET is a generated dataset folder (`ksmith generate specs/suites/default.yaml --size small
--out DATASET`). Both ways train the same freshly initialised model of the spec's shape (the
default: specs/world/default.yaml) on ONE thread, on the same seeded batch stream of the
dataset's corpus (`ksmith.world.training._stream`, as `ksmith pretrain` draws it), in the
same process, taking turns (`--rounds` rounds of `--steps` steps each way, after 20 warm-up
steps), so that a noisy machine slows both alike. Each step is what `train` does: build the
right-padded batch, loss, backward, gradient clip, AdamW step; process CPU time is measured
per step and summed. The comparison is the tool a user would otherwise run:
``LlamaForCausalLM(input_ids, attention_mask, labels).loss`` with PyTorch's default AdamW
(``train_kernels: transformers``) against `ksmith.world.fused` (``train_kernels: fused``).

Printed: per round the CPU milliseconds per step of each, then one summary line; `ratio` is the
transformers step's median CPU time over the fused step's (above 1: fused is faster), with
`pretrain_s_transformers` and `pretrain_s_fused` the spec's `max_steps` at those medians.

Results (2026-12-04, default spec and suite, 32,740 corpus lines, AVX2 EPYC, one thread, the
other core busy with one training): see docs/world-model.md, "Training".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ksmith.runtime import pin_float_kernels  # noqa: E402

pin_float_kernels()

import torch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--spec", default=None, help="world spec (default: the default)")
    parser.add_argument("--steps", type=int, default=400, help="timed steps per round and way")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from ksmith.world.fused import fused_loss, fused_optimizer
    from ksmith.world.pretrain import load_world_data
    from ksmith.world.spec import load_world_spec
    from ksmith.world.tokenizer import train_tokenizer
    from ksmith.world.training import _stream, build_model, encode_lines, step_loss

    spec = load_world_spec(args.spec)
    world = load_world_data(args.dataset)
    tokenizer = train_tokenizer(world.vocabulary, spec.tokenizer, spec.bpe_vocab_size)
    data = encode_lines(tokenizer, world.lines, spec.max_position)
    pad = tokenizer.pad_token_id

    def batches():
        generator = torch.Generator().manual_seed(spec.seed)
        return _stream([len(x) for x in data], spec.batch_size, generator, [], 0)

    def run(fused: bool, steps: int) -> float:
        """CPU seconds per step over `steps` steps (after 20 untimed ones)."""
        model = build_model(spec, tokenizer)
        model.train()
        kw = {"lr": spec.lr, "betas": (0.9, 0.98), "weight_decay": spec.weight_decay}
        loss_fn = fused_loss(model) if fused else None
        if fused:
            optimizer = fused_optimizer(model.parameters(), **kw)
        else:
            optimizer = torch.optim.AdamW(model.parameters(), **kw)
        stream = batches()
        spent = 0.0
        for i in range(20 + steps):
            seqs = [data[j] for j in next(stream)]
            start = time.process_time()
            loss = step_loss(model, seqs, pad, loss_fn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                model.parameters(), spec.grad_clip, foreach=fused or None
            )
            optimizer.step()
            if i >= 20:
                spent += time.process_time() - start
        return spent / steps

    hf, fz = [], []
    for r in range(args.rounds):
        hf.append(run(False, args.steps))
        fz.append(run(True, args.steps))
        print(f"round {r + 1}: transformers {1000 * hf[-1]:.2f} ms/step, "
              f"fused {1000 * fz[-1]:.2f} ms/step", flush=True)  # fmt: skip
    a, b = statistics.median(hf), statistics.median(fz)
    print(
        f"ratio={a / b:.3f} transformers_ms={1000 * a:.2f} fused_ms={1000 * b:.2f} "
        f"pretrain_s_transformers={a * spec.max_steps:.0f} pretrain_s_fused={b * spec.max_steps:.0f} "
        f"steps={args.steps} rounds={args.rounds}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
