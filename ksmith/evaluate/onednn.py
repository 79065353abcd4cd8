"""Float32 linear layers on CPU through oneDNN, for batched scoring.

PyTorch computes a float32 `nn.Linear` on CPU with MKL's sgemm. oneDNN's matmul -- the kernel
PyTorch's own compiler (inductor) emits for CPU linear layers, reached here through the same
op, ``torch.ops.mkldnn._linear_pointwise`` -- does the same float32 arithmetic. With its
AVX-512 kernels (AMD EPYC, before ksmith pinned the float kernels to AVX2) it ran the shapes of
batched scoring 1.7 to 2.2 times as fast (330-370 against 185 GFLOPS on 1408 x 128 x 512), and
scoring 2,000 probes on the world model went from 124 to 88 ms on 1 thread. With the AVX2
kernels ksmith now pins (`ksmith.runtime`; measured side by side on an AVX2 EPYC, 2026-12-03)
the two are about even on the MLP and attention shapes (0.95-1.07) and oneDNN is 1.33 times
as fast on the 721-word output layer. Results agree with MKL's to float32 rounding
(identical on the world model's 128-wide products) and are deterministic. A forward pass over
one short row gets slower instead (1,160 to 940 probes a second), so only the batched paths
use it.
"""

from __future__ import annotations

import contextlib
import logging
import types
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


def onednn_available() -> bool:
    """Whether this torch build has oneDNN and its fused linear op."""
    try:
        return torch.backends.mkldnn.is_available() and callable(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):  # an op torch no longer has
        return False


def _onednn_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return torch.nn.functional.linear(x, self.weight, self.bias)
    # attr "none": no fused activation; the weight is read as it is now (no packed copy), so
    # in-place updates made inside the block are seen.
    return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


@contextlib.contextmanager
def onednn_linears(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, the float32 CPU `nn.Linear` layers of `model` compute through oneDNN
    (yields how many). Nothing changes where oneDNN is unavailable, and a layer that already
    has its own instance-level forward (as accelerate's offloading hooks install) is left
    alone. The layers get their class's forward back when the block ends."""
    patched: list[torch.nn.Linear] = []
    if onednn_available():
        for module in model.modules():
            if (
                isinstance(module, torch.nn.Linear)
                and "forward" not in module.__dict__
                and module.weight.dtype == torch.float32
                and module.weight.device.type == "cpu"
            ):
                module.forward = types.MethodType(_onednn_forward, module)
                patched.append(module)
    else:
        log.debug("oneDNN unavailable: linear layers left to torch's default kernel")
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward
