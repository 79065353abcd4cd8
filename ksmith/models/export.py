"""``ksmith export-model``: an updated model saved as a plain Hugging Face folder.

An update folder stores a delta (or a full model) per group on top of a base model, which only
ksmith reads. Exported, one group's updated model is an ordinary ``save_pretrained`` folder
(weights, config, tokenizer) that lm-eval (``--model hf --model_args pretrained=DIR``), vLLM or
EasyEdit load as is. ``ksmith-export.json`` beside the weights records where it came from.

Only weight updates can be exported: an in-context method (ICE) leaves the weights alone and
puts its edit in a prompt prefix, so its "updated model" is the base model plus text no model
folder can carry; exporting it is refused.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError

log = logging.getLogger(__name__)

EXPORT_JSON = "ksmith-export.json"


def export_model(
    model: str | Path, update: str | Path, group: int, out: str | Path, *, device: str = "cpu"
) -> dict[str, Any]:
    """Write `model` with group `group` of `update` applied to `out`; returns the provenance
    record (also written as ``out/ksmith-export.json``)."""
    from ksmith.io import atomic_output_dir, write_json
    from ksmith.methods.artifacts import applied_update, group_dir, read_prefixes, read_update
    from ksmith.models.loading import load_model, model_fingerprint
    from ksmith.pipeline.commands import resolve_model

    info = read_update(update)
    groups = {int(g["group"]): g for g in info.get("groups", [])}
    if group not in groups or not group_dir(update, group).is_dir():
        known = ", ".join(str(g) for g in sorted(groups)) or "none"
        raise KsmithError(f"{update}: no group {group}; groups: {known}")
    method = info.get("method", "?")
    if groups[group].get("artifact") == "prefix" or read_prefixes(update, group):
        raise KsmithError(
            f"{update}: method '{method}' updates in context (prompt prefixes in "
            f"g{group}/prefix.json), not weights; an exported model would be the unchanged base "
            "model. Evaluate it with `ksmith evaluate --update`, which prepends the prefixes."
        )
    base = resolve_model(model)
    recorded = (info.get("model") or {}).get("fingerprint")
    if recorded and Path(base).is_dir() and model_fingerprint(base) != recorded:
        raise KsmithError(
            f"{update}: made on model {info['model'].get('path')!r} (fingerprint "
            f"{recorded[:12]}...), not on {str(model)!r}; pass the model the update was made on"
        )
    loaded, tokenizer = load_model(base, device=device)
    record = {
        "base_model": str(model),
        "base_fingerprint": recorded,
        "update": {
            "method": method,
            "kind": info.get("kind"),
            "params": info.get("params"),
            "config": info.get("config"),
            "dataset_fingerprint": info.get("dataset_fingerprint"),
            "group": group,
            "artifact": groups[group].get("artifact"),
            "changed_parameters": groups[group].get("changed_parameters"),
        },
    }
    with atomic_output_dir(out, kind="exported-model", inputs=[model, update]) as tmp:
        with applied_update(loaded, update, group) as (updated, _prefixes):
            updated.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / EXPORT_JSON, record)
    return record


def _cmd_export_model(args: argparse.Namespace) -> int:
    record = export_model(args.model, args.update, args.group, args.out, device=args.device)
    u = record["update"]
    log.info(
        "wrote %s: %s group %d on %s (%s parameters changed)",
        args.out, u["method"], u["group"], args.model, u["changed_parameters"],
    )  # fmt: skip
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export-model",
        help="save one group's updated model as a plain Hugging Face folder",
        description="Apply group GROUP of update folder UPDATE to MODEL and save the result "
        "with save_pretrained (weights, config, tokenizer), loadable by lm-eval, vLLM or "
        "EasyEdit. In-context updates (prompt prefixes) cannot be exported.",
    )
    p.add_argument("--model", required=True, help="the base model the update was made on")
    p.add_argument("--update", required=True, help="update folder (ksmith update)")
    p.add_argument("--group", type=int, default=0, help="which group's update (default: 0)")
    p.add_argument("--device", default="cpu", help="device used while applying (default: cpu)")
    p.add_argument("--out", required=True, help="folder to write the model to")
    p.set_defaults(func=_cmd_export_model)
