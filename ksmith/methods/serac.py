"""SERAC: semi-parametric editing with a retrieval-augmented counterfactual model (Mitchell,
Lin, Bosselut, Manning, Finn 2022, "Memory-Based Model Editing at Scale", arXiv 2206.06520).

SERAC leaves the base model's weights alone and wraps it (paper Sec. 3, Fig. 2):

- an *edit memory* Z_e = {z_e}: the edit descriptors as given (here each request's statement
  "{prompt} {new object}");
- a *scope classifier* g_phi(z_e, x) -> [0, 1], the probability that input x lies in the scope
  of edit z_e. For an input x the most likely edit is retrieved,
  i* = argmax_i g_phi(z_{e_i}, x), and x is in scope when g_phi(z_{e_i*}, x) > 0.5 (Eq. 1's
  routing; the reference code's `cls_threshold`, algs/serac.py);
- a *counterfactual model* h_psi(z_e, x) that answers in-scope inputs given the edit; otherwise
  the base model answers, untouched:

      f~(x) = h_psi(z_{e_i*}, x)   if g_phi(z_{e_i*}, x) > 0.5,   else f_base(x).

Choices on ksmith's tiny world, where training a separate seq2seq model is out of scale:

- counterfactual model = the world model with the retrieved edit in its context, in ksmith's
  ICE format (ice.py: ``"New Fact: {prompt} {target}\\nPrompt: " + x``). The world model was
  trained on in-context lines of this form (docs/world-model.md), and the paper's own ablation
  replaces h_psi by the base model prompted with the edit (its "in-context" counterfactual). It
  is not trained here; only the classifier is.
- scope classifier over the world model's own hidden states (the paper's best is a
  cross-encoder, its cheaper one an embedding-similarity "dual" encoder): the base model's
  hidden state after block `layer` at the input's last token is the feature of x, the same at
  the edit prompt's last token that of z_e (stored in the memory as its key), and a small MLP
  over [u, v, u*v, |u-v|] of their projections scores the pair (the pair-feature head of
  sentence-pair classifiers, Conneau et al. 2017, a cross-feature head over frozen features).
  It is trained on the training split of the world (`ksmith.methods.trained.split`: subjects
  no evaluated config touches) with binary cross-entropy: inputs are every split edit's
  in-scope prompts (training templates and held-out paraphrase) and out-of-scope prompts (the
  same subject's other relations, other subjects' facts); within a batch of edits, an input is
  positive for an edit when it asks that edit's (subject, relation). ``ksmith train-editor
  --method serac`` writes the classifier (`ksmith.methods.trained.editor`).

Routing is decided per output position on the tokens up to it (causal, like GRACE and WISE
here): position t's logits are the base model's unless the classifier puts x = tokens 0..t in
the scope of an edit, and then they are the counterfactual model's at the same position,
computed on [edit prefix] + tokens 0..t. So teacher-forced scoring, packed (tree-masked)
batches and generation agree; for generation the memory turns the KV cache off (the
counterfactual input differs per step). The memory is an attachment (`ksmith.methods.attach`):
forward hooks on the model and on block `layer`, saved as ``g<i>/attach/`` with the classifier
copied in, so an update folder stands alone.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.attach import ATTACHMENTS, Attachment, attached
from ksmith.methods.base import (
    MethodParams,
    Request,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)
from ksmith.methods.train_utils import model_device
from ksmith.models.arch import get_module, layer_path, num_layers
from ksmith.render.text import IN_CONTEXT

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PAPER = (
    "Mitchell, Lin, Bosselut, Manning, Finn. Memory-Based Model Editing at Scale. ICML 2022. "
    "arXiv:2206.06520"
)


class SERACParams(MethodParams):
    """SERAC hyper-parameters at update time (defaults: specs/methods/serac.yaml)."""

    editor_path: str | None = Field(
        None, description="the trained-editor folder (ksmith train-editor --method serac)"
    )
    threshold: float = Field(
        0.5, ge=0, le=1, description="in scope when g(z_e, x) > threshold (paper: 0.5)"
    )
    template: str = Field(IN_CONTEXT, description="counterfactual prompt, as ICE's template")
    fact: str = Field("{prompt} {target}", description="an edit descriptor z_e, as ICE's fact")


class SERACTraining(MethodParams):
    """How ``ksmith train-editor --method serac`` trains the scope classifier."""

    layer: int = Field(-1, description="block whose last-token hidden state is the feature")
    proj_dim: int = Field(64, ge=1, description="projection width of u and v")
    hidden: int = Field(128, ge=1, description="hidden width of the pair MLP")
    steps: int = Field(400, ge=1, description="optimizer steps")
    batch_edits: int = Field(16, ge=2, description="edits per batch (their prompts the inputs)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    balance: bool = Field(
        False, description="weight positives as much as all negatives (else plain BCE)"
    )
    n_train: int = Field(400, ge=2, description="training edits drawn from the split")
    n_heldout: int = Field(50, ge=1, description="held-out edits (on held-out subjects)")
    locality: int = Field(
        4, ge=0, description="locality prompts per split edit (half on its subject)"
    )
    log_every: int = Field(25, ge=1, description="a training-curve point every this many steps")
    seed: int = Field(0, description="seed of the split draw, the init and the batches")


class ScopeClassifier(torch.nn.Module):
    """g(x, e) = sigmoid(MLP([u, v, u*v, |u-v|])), u = P((h_x - mu)/sigma), v likewise for h_e.

    `mu`, `sigma` standardise the hidden states (set from the training features)."""

    def __init__(self, d_in: int, proj_dim: int, hidden: int):
        super().__init__()
        self.register_buffer("mu", torch.zeros(d_in))
        self.register_buffer("sigma", torch.ones(d_in))
        self.proj = torch.nn.Linear(d_in, proj_dim)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(4 * proj_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def forward(self, hx: torch.Tensor, he: torch.Tensor) -> torch.Tensor:
        """Logits of every (input, edit) pair: hx (N, d), he (M, d) -> (N, M)."""
        u = self.proj((hx.float() - self.mu) / self.sigma)[:, None, :]  # (N, 1, p)
        v = self.proj((he.float() - self.mu) / self.sigma)[None, :, :]  # (1, M, p)
        u, v = torch.broadcast_tensors(u, v)
        return self.mlp(torch.cat([u, v, u * v, (u - v).abs()], dim=-1)).squeeze(-1)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "") -> ScopeClassifier:
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            d_in, proj, hidden = (
                sd["mu"].numel(),
                sd["proj.weight"].shape[0],
                sd["mlp.0.weight"].shape[0],
            )
            g = cls(d_in, proj, hidden)
            g.load_state_dict(sd)
        except (KeyError, RuntimeError) as e:
            raise KsmithError(f"serac: the scope classifier's weights do not fit: {e}") from e
        return g.eval()


def block_path(model: torch.nn.Module, layer: int) -> str:
    return layer_path(model, layer % num_layers(model), "")


def _block_hidden(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # (B, T, H)


@torch.no_grad()
def last_token_features(
    model: torch.nn.Module, tokenizer, texts: list[str], layer: int, batch_size: int = 64
) -> torch.Tensor:
    """The hidden state after block `layer` at each text's last token: (N, H) float32, as the
    evaluator encodes a context (special tokens added), with every attachment's routing off."""
    module = get_module(model, block_path(model, layer))
    device = model_device(model)
    out = torch.empty(0)
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _a, o: seen.__setitem__("h", _block_hidden(o)))
    memories = [a for a in attached(model) if isinstance(a, SERACMemory)]
    for m in memories:
        m._busy = True
    try:
        chunks = []
        for i in range(0, len(texts), batch_size):
            enc = [
                tokenizer(t)["input_ids"] or [tokenizer.bos_token_id or 0]
                for t in texts[i : i + batch_size]
            ]
            width = max(len(e) for e in enc)
            ids = torch.zeros((len(enc), width), dtype=torch.long)
            mask = torch.zeros((len(enc), width), dtype=torch.long)
            for row, e in enumerate(enc):
                ids[row, : len(e)] = torch.tensor(e)
                mask[row, : len(e)] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
            last = torch.tensor([len(e) - 1 for e in enc], device=device)
            chunks.append(seen["h"][torch.arange(len(enc), device=device), last].float().cpu())
        out = torch.cat(chunks) if chunks else out
    finally:
        handle.remove()
        for m in memories:
            m._busy = False
    return out


class SERACMemory(Attachment):
    """The edit memory with its scope classifier, routing the model's outputs (see module doc).

    keys (n, H): the edits' features; prefixes: each edit's counterfactual prompt as token ids.
    """

    kind: ClassVar[str] = "serac"

    def __init__(
        self,
        model: torch.nn.Module,
        block: str,
        classifier: ScopeClassifier,
        keys: torch.Tensor,
        prefixes: list[list[int]],
        labels: list[str],
        threshold: float,
        bos_id: int | None,
    ):
        super().__init__(model)
        device = model_device(model)
        self.block = block
        self.classifier = classifier.to(device).eval()
        self.keys = keys.detach().to(device, torch.float32)
        self.prefixes = [list(map(int, p)) for p in prefixes]
        self.labels = list(labels)
        self.threshold = float(threshold)
        self.bos_id = bos_id
        self._busy = False  # True while the memory runs the base model itself
        self._feats: torch.Tensor | None = None
        self.hook(get_module(model, block), self._capture)
        self.hook(model, self._route, with_kwargs=True)
        # Generation: each step's counterfactual input is a different sequence, so no KV cache.
        original = model.generate

        def generate(*args, **kwargs):
            config = kwargs.get("generation_config")
            if config is None:
                kwargs["use_cache"] = False
            else:
                kwargs["generation_config"] = config = copy.deepcopy(config)
                config.use_cache = False
            return original(*args, **kwargs)

        model.generate = generate

    def detach(self) -> None:
        model = self._model()
        super().detach()
        if model is not None and "generate" in model.__dict__:
            del model.generate

    def __len__(self) -> int:
        return len(self.labels)

    def num_parameters(self) -> int:
        return self.keys.numel() + sum(len(p) for p in self.prefixes)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        meta = {
            "block": self.block,
            "prefixes": self.prefixes,
            "labels": self.labels,
            "threshold": self.threshold,
            "bos_id": self.bos_id,
        }
        tensors = {"keys": self.keys}
        tensors.update({f"cls.{k}": v for k, v in self.classifier.state_dict().items()})
        return meta, tensors

    @classmethod
    def from_state(cls, model, meta, tensors) -> SERACMemory:
        if not len(meta["prefixes"]) == len(meta["labels"]) == len(tensors["keys"]):
            raise KsmithError("serac: memory keys, prefixes and labels differ in length")
        g = ScopeClassifier.from_tensors(tensors, "cls.")
        return cls(
            model, meta["block"], g, tensors["keys"], meta["prefixes"], meta["labels"],
            meta["threshold"], meta.get("bos_id"),
        )  # fmt: skip

    def add(self, key: torch.Tensor, prefix: list[int], label: str) -> None:
        self.keys = torch.cat([self.keys, key.to(self.keys)[None]])
        self.prefixes.append(list(prefix))
        self.labels.append(label)

    # -- routing --------------------------------------------------------------------------------

    def scope(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g of the best edit, its index) for features h (N, H): (N,), (N,)."""
        p = torch.sigmoid(self.classifier(h, self.keys))  # (N, n)
        return p.max(dim=1)

    def _capture(self, _module, _args, out):
        if not self._busy:
            self._feats = _block_hidden(out)
        return None

    def _route(self, _module, args, kwargs, out):
        if self._busy or len(self) == 0 or self._feats is None:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        logits = getattr(out, "logits", None)
        if ids is None or logits is None:
            return None
        past = kwargs.get("past_key_values")
        if past is not None and past.get_seq_length() > 0:
            raise KsmithError("serac: routing needs the whole input; run without a KV cache")
        mask, keep = kwargs.get("attention_mask"), kwargs.get("logits_to_keep", 0)
        B, L = ids.shape
        if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:  # (B, L) -> (K, V)
            pos = keep.nonzero().tolist()
        else:
            if isinstance(keep, torch.Tensor):
                cols = keep.tolist()
            else:
                cols = list(range(L - int(keep), L)) if int(keep) > 0 else list(range(L))
            pos = [[b, t] for b in range(B) for t in cols]
        flat = logits.reshape(-1, logits.shape[-1])
        if flat.shape[0] != len(pos):
            raise KsmithError("serac: cannot match the model's logits to input positions")
        feats = self._feats
        self._feats = None
        where = torch.tensor(pos, device=feats.device).reshape(-1, 2)
        g, best = self.scope(feats[where[:, 0], where[:, 1]])
        routed = [k for k in (g > self.threshold).nonzero().flatten().tolist()
                  if _real(mask, *pos[k])]  # fmt: skip
        if not routed:
            return None
        seqs = [self._counterfactual_input(ids, mask, *pos[k], int(best[k])) for k in routed]
        new = flat.clone()
        new[torch.tensor(routed, device=new.device)] = self._last_logits(seqs, keep).to(new.dtype)
        out.logits = new.view(logits.shape)
        return out

    def _counterfactual_input(self, ids, mask, b: int, t: int, edit: int) -> list[int]:
        """[edit prefix] + the tokens position t of row b reads (its path in a tree mask)."""
        if mask is None:
            path = ids[b, : t + 1]
        elif mask.dim() == 2:
            path = ids[b, : t + 1][mask[b, : t + 1].bool()]
        else:
            row = mask[b, 0, t, : t + 1]
            allowed = row if row.dtype == torch.bool else row == 0
            path = ids[b, : t + 1][allowed]
        tokens = path.tolist()
        prefix = self.prefixes[edit]
        if self.bos_id is not None and tokens and tokens[0] == self.bos_id:
            return [tokens[0], *prefix, *tokens[1:]]
        return [*prefix, *tokens]

    @torch.no_grad()
    def _last_logits(self, seqs: list[list[int]], keep) -> torch.Tensor:
        """The base model's logits at each sequence's last token: (len(seqs), V)."""
        model = self.model
        device = model_device(model)
        width = max(len(s) for s in seqs)
        if isinstance(keep, torch.Tensor) and keep.dim() == 2 and keep.shape == (len(seqs), width):
            width += 1  # never the shape of the packed batch (LastBlockWhereRead keys on it)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        self._busy = True
        try:
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        finally:
            self._busy = False
        last = torch.tensor([len(s) - 1 for s in seqs], device=logits.device)
        return logits[torch.arange(len(seqs), device=logits.device), last]


def _real(mask, b: int, t: int) -> bool:
    """Whether position t of row b is a token (not padding) under a 2D mask."""
    return mask is None or mask.dim() != 2 or bool(mask[b, t])


ATTACHMENTS.register(SERACMemory.kind)(SERACMemory)


@register_method
class SERAC(UpdateMethod):
    """Edit memory + scope classifier + counterfactual model (arXiv 2206.06520, Sec. 3)."""

    name: ClassVar[str] = "serac"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = PAPER
    Params = SERACParams

    def descriptor(self, r: Request) -> str:
        """z_e: the edit as stated in the counterfactual model's context."""
        p: SERACParams = self.params  # type: ignore[assignment]
        fact = p.fact.format(
            prompt=r.prompt, target=r.new_object, subject=r.subject, relation=r.relation
        )
        return p.template.format(facts=fact)

    def memory(self, model, problem: UpdateProblem) -> SERACMemory:
        """The model's SERAC memory (created from the trained editor on first use)."""
        for a in attached(model):
            if isinstance(a, SERACMemory):
                return a
        from ksmith.methods.stats import weights_fingerprint
        from ksmith.methods.trained.editor import read_editor

        p: SERACParams = self.params  # type: ignore[assignment]
        fp = problem.model_fingerprint or weights_fingerprint(model)
        card, tensors = read_editor(p.editor_path, self.name, fp)
        g = ScopeClassifier.from_tensors(tensors, "cls.")
        layer = int(card["training"]["layer"])
        keys = torch.zeros((0, g.mu.numel()))
        return SERACMemory(model, block_path(model, layer), g, keys, [], [], p.threshold, None)

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        if any(not r.new_object for r in problem.requests):
            raise KsmithError("serac: every edit needs a new object")
        mem = self.memory(model, problem)
        mem.bos_id = _bos_added(tokenizer)
        layer = _layer_of(model, mem.block)
        keys = last_token_features(model, tokenizer, [r.prompt for r in problem.requests], layer)
        for r, key in zip(problem.requests, keys, strict=True):
            prefix = prefix_ids(tokenizer, self.descriptor(r))
            mem.add(key, prefix, r.request_id)
        return UpdateResult(log={"memory_size": len(mem)})


def prefix_ids(tokenizer, text: str) -> list[int]:
    """The counterfactual prefix as tokens: `text` without its trailing space, which the
    input's first token carries (a word-level or SentencePiece-style tokenizer encodes
    ``prefix + input`` as exactly these ids followed by the input's; a byte-level BPE may
    merge differently at the boundary than ICE's text-level concatenation)."""
    return tokenizer(text.rstrip(" "), add_special_tokens=False)["input_ids"]


def _bos_added(tokenizer) -> int | None:
    """The BOS id when the tokenizer starts every encoding with it (the prefix goes after it)."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos if bos is not None and ids and ids[0] == bos else None


def _layer_of(model, block: str) -> int:
    for i in range(num_layers(model)):
        if block_path(model, i) == block:
            return i
    raise KsmithError(f"serac: block {block} is not in this model")
