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
copied in, so an update folder stands alone. The memory, its scope classifier and the routing
live in `ksmith.methods.serac_memory`; this module holds the method and its settings.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.attach import attached
from ksmith.methods.base import (
    MethodParams,
    Request,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)
from ksmith.methods.serac_memory import (
    ScopeClassifier,
    SERACMemory,
    block_path,
    last_token_features,
)
from ksmith.models.arch import num_layers
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
