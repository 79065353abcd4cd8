"""SERAC's edit memory: the scope classifier g_phi and the attachment that routes outputs.

The memory (`SERACMemory`, an attachment: `ksmith.methods.attach`) holds each edit's key (the
world model's hidden state after block `layer` at the edit prompt's last token) and its
counterfactual prefix; per output position it asks the `ScopeClassifier` whether the tokens up
to it lie in the scope of an edit, and if so answers with the base model on [edit prefix] +
those tokens (the method and its choices: `ksmith.methods.serac`). `last_token_features` is
the feature of an input, shared with the classifier's training
(`ksmith.methods.trained.serac_train`).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch

from ksmith.errors import KsmithError
from ksmith.methods.attach import ATTACHMENTS, Attachment, attached
from ksmith.methods.train_utils import model_device
from ksmith.models.arch import get_module, layer_path, num_layers


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
        past = kwargs.get("past_key_values", kwargs.get("cache"))  # transformers 4 / 5
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
