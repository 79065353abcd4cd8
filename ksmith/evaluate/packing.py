"""Prefix sharing for teacher-forced scoring: a trie of token rows, packed under a tree mask.

Scoring rows share prefixes (a prompt template, one question asked with several answers). A
causal LM's output at position t depends only on tokens 0..t, so each distinct prefix -- each
node of the trie of rows -- needs computing once. The trie is cut into packed sequences of at
most `budget` tokens, ancestors before descendants; inside one, a token attends to itself and
its trie ancestors only and has position id = its depth, so its hidden states are those of its
prefix run alone. This is the tree attention ("topology-aware causal mask") with which SpecInfer
(Miao et al., arXiv:2305.09781, Sec. 4) verifies a token tree in one pass, used here to score.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from ksmith.models.arch import get_module, layer_path

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

# Model types whose forward (transformers 5) uses a 4D attention mask as given (masking_utils
# returns a 4D mask unchanged), reads positions from `position_ids` (learned or rotary) and
# slices hidden states by a boolean `logits_to_keep` (`slice_logits_to_keep`).
TREE_ATTENTION_MODELS = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3"})
# Attention implementations that apply a custom 4D mask (sdpa: boolean or additive; eager:
# additive float). Flash-attention kernels take no such mask.
TREE_ATTENTION_IMPLEMENTATIONS = frozenset({"sdpa", "eager"})


def supports_tree_attention(config: PretrainedConfig, max_length: int) -> bool:
    """Whether a model with this config computes a packed sequence under a tree mask exactly:
    a known model type, sdpa or eager attention, and no sliding window shorter than
    `max_length` (a custom mask replaces the window's own)."""
    window = getattr(config, "sliding_window", None)
    return (
        getattr(config, "model_type", None) in TREE_ATTENTION_MODELS
        and getattr(config, "_attn_implementation", None) in TREE_ATTENTION_IMPLEMENTATIONS
        and (not window or window >= max_length)
    )


@dataclass(frozen=True)
class PrefixTrie:
    """The distinct prefixes of a set of token rows; nodes are numbered in depth-first preorder.

    A row of n tokens is the path of n nodes `paths[row]`; the node at depth d stands for the
    row's first d + 1 tokens, and the model's output there predicts the row's token d + 1.
    """

    tokens: list[int]  # node -> its last token
    parents: list[int]  # node -> parent node, -1 at depth 0
    depths: list[int]  # node -> depth (= position id)
    ends: list[int]  # node -> one past its subtree: the subtree of v is nodes v .. ends[v] - 1
    paths: list[list[int]]  # row -> its nodes, first token first

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`tokens`, `parents`, `depths` and `ends` as int64 arrays [n_nodes], made once."""
        fields = (self.tokens, self.parents, self.depths, self.ends)
        return tuple(np.asarray(a, dtype=np.int64) for a in fields)  # type: ignore[return-value]


def build_trie(rows: Sequence[Sequence[int]]) -> PrefixTrie:
    """The prefix trie of `rows` (each non-empty), in O(total tokens).

    Rows are inserted in lexicographic order: the longest prefix a row shares with any earlier
    row is then the one it shares with the row just before, and new nodes come out in preorder.
    """
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    ends: list[int] = []
    paths: list[list[int]] = [[] for _ in rows]
    prev: Sequence[int] = ()
    prev_path: list[int] = []
    for r in sorted(range(len(rows)), key=rows.__getitem__):  # lexicographic
        row = rows[r]
        shared = 0
        for a, b in zip(prev, row, strict=False):
            if a != b:
                break
            shared += 1
        # New nodes for row[shared:], numbered on from len(tokens); each is its successor's parent.
        first, n = len(tokens), len(row)
        new = range(first, first + n - shared)
        if new:  # (a repeated row adds none)
            parents.append(prev_path[shared - 1] if shared else -1)
            parents.extend(new[:-1])
        tokens.extend(row[shared:])
        depths.extend(range(shared, n))
        ends.extend(new)  # placeholders, set when a later row leaves the node (or at the end)
        for v in prev_path[shared:]:  # the previous row's nodes this row leaves
            ends[v] = first
        paths[r] = path = prev_path[:shared] + list(new)
        prev, prev_path = row, path
    for v in prev_path:
        ends[v] = len(tokens)
    return PrefixTrie(tokens, parents, depths, ends, paths)


@dataclass(frozen=True)
class PackedSequence:
    """Trie nodes run as one sequence: the ancestor path of node `first` (computed again here
    so the sequence stands alone), then the preorder run of nodes ``first .. stop - 1``, which
    are computed here for the first and only time (their "home")."""

    ancestors: list[int]  # root side first; ancestors[d] is at depth d
    first: int
    stop: int

    @property
    def nodes(self) -> list[int]:
        return [*self.ancestors, *range(self.first, self.stop)]

    def __len__(self) -> int:
        return len(self.ancestors) + self.stop - self.first


def pack_trie(trie: PrefixTrie, budget: int) -> list[PackedSequence]:
    """Cut the trie into sequences of at most ``max(budget, deepest path)`` tokens.

    Each sequence is a run of consecutive nodes in preorder behind the ancestor path of the
    run's first node. That is closed under parents: a node's parent comes before it in preorder,
    and if it comes before the run's first node too, the run lies inside the parent's subtree
    (subtrees are contiguous in preorder), so the parent is an ancestor of the first node.
    """
    if len(trie) == 0:
        return []
    budget = max(budget, max(trie.depths) + 1)
    out: list[PackedSequence] = []
    first = 0
    while first < len(trie):
        ancestors = []
        p = trie.parents[first]
        while p >= 0:
            ancestors.append(p)
            p = trie.parents[p]
        ancestors.reverse()
        stop = min(len(trie), first + budget - len(ancestors))
        out.append(PackedSequence(ancestors, first, stop))
        first = stop
    return out


def tree_inputs(
    trie: PrefixTrie, seqs: Sequence[PackedSequence], pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded model inputs for a batch of packed sequences.

    Returns input ids [B, L], position ids [B, L] (the trie depth), the tree mask [B, L, L]
    (True where query i may attend to key j: j is i or an ancestor of i; a pad attends to
    itself only, so no softmax row is empty) and the node whose home each position is [B, L]
    (-1 at repeated ancestors and pads).

    The mask comes from subtree intervals: the nodes of a sequence that descend from the one
    at position j (itself included) sit at positions j .. end_j - 1, because a subtree is a
    contiguous run of the preorder and the sequence is an ancestor path followed by such a run
    (the run starts inside the subtree of each ancestor, so it leaves the subtree at most once).
    """
    B, L = len(seqs), max(len(s) for s in seqs)
    tokens, _, depths, ends = trie.arrays
    nodes = np.full((B, L), -1, dtype=np.int64)  # [B, L] trie node at each position; -1: pad
    for b, s in enumerate(seqs):
        a = len(s.ancestors)
        nodes[b, :a] = s.ancestors
        nodes[b, a : a + s.stop - s.first] = np.arange(s.first, s.stop)
    real = nodes >= 0
    v = np.where(real, nodes, 0)
    ids = np.where(real, tokens[v], pad_id)
    pos = np.where(real, depths[v], 0)
    a = np.array([len(s.ancestors) for s in seqs])[:, None]  # [B, 1]
    first = np.array([s.first for s in seqs])[:, None]  # [B, 1]
    stop = np.array([s.stop for s in seqs])[:, None]  # [B, 1]
    local = np.arange(L)
    # Position of v's last descendant here, plus one; run node v sits at a + v - first.
    end = np.where(real, a + np.minimum(ends[v], stop) - first, local + 1)  # [B, L]
    mask = (local[None, None, :] <= local[None, :, None]) & (
        local[None, :, None] < end[:, None, :]
    )  # [B, L, L]: j <= i < end_j
    return ids, pos, mask, np.where(real & (local >= a), nodes, -1)


def tree_forwards(
    trie: PrefixTrie,
    batches: Iterable[Sequence[PackedSequence]],
    keep: np.ndarray,
    pad_id: int,
    mask_dtype: torch.dtype,
    device: torch.device,
) -> Iterator[tuple[dict[str, torch.Tensor | bool], np.ndarray]]:
    """Model keyword arguments for each batch of packed sequences, and the nodes whose logits
    it returns: those with `keep` [n_nodes] set, projected at their home position only (a
    boolean `logits_to_keep` [B, L] flattens the logits to [K, V], in row-major order).

    The tree mask is boolean (True = attend; sdpa) for ``mask_dtype=torch.bool``, else
    additive in that float dtype (0 or its minimum; what eager attention adds to the scores).
    """
    for batch in batches:
        ids, pos, allowed, homes = tree_inputs(trie, batch, pad_id)  # [B, L], [B, L, L]
        mask = torch.from_numpy(allowed)
        if mask_dtype != torch.bool:
            mask = torch.zeros(allowed.shape, dtype=mask_dtype).masked_fill_(
                ~mask, torch.finfo(mask_dtype).min
            )
        home = homes >= 0
        home[home] = keep[homes[home]]  # [B, L] where a kept node is at home
        if not home.any():
            continue  # only ancestors of nodes homed elsewhere: nothing to read here
        kept = homes[home]  # row-major, as logits_to_keep flattens
        kwargs: dict[str, torch.Tensor | bool] = {
            "input_ids": torch.from_numpy(ids).to(device),
            "position_ids": torch.from_numpy(pos).to(device),
            "attention_mask": mask[:, None].to(device),  # [B, 1, L, L]
            "logits_to_keep": torch.from_numpy(home).to(device),
            "use_cache": False,
        }
        yield kwargs, kept


def continuation_nodes(
    trie: PrefixTrie, members: Sequence[list[int]], continuations: Sequence[list[int]]
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Where each continuation token is predicted: a continuation of k tokens is read at the
    last k trie nodes of its row (`members[row]` lists the requests a row serves). Returns the
    requests in pair order [N], per (request, token) pair its trie node [T] and target [T], and
    which nodes are read [n_nodes] (the `keep` of `tree_forwards`).
    """
    owners: list[int] = []
    node: list[int] = []
    target: list[int] = []
    for r, mem in enumerate(members):
        path = trie.paths[r]
        for i in mem:
            cont = continuations[i]
            owners.append(i)
            node.extend(path[len(path) - len(cont) :])
            target.extend(cont)
    nodes = np.asarray(node, dtype=np.int64)
    read = np.zeros(len(trie), dtype=bool)
    read[nodes] = True
    return owners, nodes, np.asarray(target, dtype=np.int64), read


class LastBlockWhereRead:
    """Within the context, the last block's attention output projection and its MLP run only
    at the positions `where` [B, L] marks (set before each forward: the boolean
    `logits_to_keep`), and give zeros elsewhere.

    Exact for the logits read: both are position-wise, and after the attention itself nothing
    in the last block mixes positions, so its output at any other position reaches only the
    final norm there, whose result `logits_to_keep` drops. In a packed batch most positions
    are ancestors of the nodes read (about four in five on the default suite), and the MLP and
    output projection are four fifths of the last block's weight products (the world model's
    MLP is 4x wide), so most of those are skipped. The keys and values are needed at every
    position, so the rest of the attention runs in full. The hooks do nothing if a module is
    ever called with keyword arguments only. Its module paths come from the architecture
    table (`ksmith.models.arch`), which covers every `TREE_ATTENTION_MODELS` type.
    """

    def __init__(self, model: PreTrainedModel):
        self.modules = [get_module(model, layer_path(model, -1, m)) for m in ("attn_out", "mlp")]
        self._where: torch.Tensor | None = None  # [B, L] bool
        self._rows: torch.Tensor | None = None  # [K] flat indices of `where`
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._gathered: set[torch.nn.Module] = set()  # modules whose current call is gathered

    @property
    def where(self) -> torch.Tensor | None:
        return self._where

    @where.setter
    def where(self, value: torch.Tensor | None) -> None:
        self._where = value
        self._rows = None if value is None else value.reshape(-1).nonzero().squeeze(1)

    def __enter__(self) -> LastBlockWhereRead:
        for module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._gather))
            self._handles.append(module.register_forward_hook(self._scatter))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._gathered.clear()

    def _gather(self, module: torch.nn.Module, args: tuple) -> tuple | None:
        if self._rows is None or not args or args[0].shape[:2] != self._where.shape:
            return None
        self._gathered.add(module)
        x = args[0]  # [B, L, X]
        picked = x.reshape(-1, x.shape[-1]).index_select(0, self._rows)  # [K, X]
        return (picked.unsqueeze(0), *args[1:])  # [1, K, X]

    def _scatter(self, module: torch.nn.Module, args: tuple, out: torch.Tensor):
        if module not in self._gathered:
            return None
        self._gathered.discard(module)
        B, L = self._where.shape  # type: ignore[union-attr]
        full = out.new_zeros((B * L, out.shape[-1]))  # [B*L, H]
        return full.index_copy_(0, self._rows, out[0]).view(B, L, -1)  # [B, L, H]


def score_tree_nodes(
    model: PreTrainedModel,
    forwards: Iterable[tuple[dict[str, torch.Tensor | bool], np.ndarray]],
    node: np.ndarray,
    target: np.ndarray,
    n_nodes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `forwards` and read, per (node, target) pair, log p(target | node's prefix) [T] and
    the argmax token at the node [T] (float32 and long, on CPU). Call under inference mode."""
    token_ll = torch.zeros(len(node), dtype=torch.float32)  # [T]
    greedy = torch.zeros(n_nodes, dtype=torch.long)  # [n_nodes], set where kept
    where = np.full(n_nodes, -1, dtype=np.int64)  # node -> row of the current logits
    with LastBlockWhereRead(model) as last_block:
        for kwargs, kept in forwards:
            last_block.where = kwargs["logits_to_keep"]  # type: ignore[assignment]
            logits = model(**kwargs).logits  # [K, V]
            logp = torch.log_softmax(logits.float(), dim=-1)  # [K, V]
            greedy[kept] = logp.argmax(-1).cpu()
            where[kept] = np.arange(len(kept))
            sel = np.flatnonzero(np.isin(node, kept))  # pairs predicted in this forward
            rows = torch.from_numpy(where[node[sel]]).to(logp.device)
            cols = torch.from_numpy(target[sel]).to(logp.device)
            token_ll[sel] = logp[rows, cols].cpu()
    return token_ll, greedy[node]
