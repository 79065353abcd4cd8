"""How the board names and links methods and models: a method's paper and reference code, a
model as an id (never a local path)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# Reference code of each built-in method (the authors' release, else the library the method
# comes from); papers come from the method registry's citation (its arXiv id).
REFERENCE_CODE = {
    "ft_l": "https://github.com/kmeng01/rome",
    "ft_m": "https://github.com/zjunlp/EasyEdit",
    "lora": "https://github.com/microsoft/LoRA",
    "adalora": "https://github.com/QingruZhang/AdaLoRA",
    "rome": "https://github.com/kmeng01/rome",
    "memit": "https://github.com/kmeng01/memit",
    "alphaedit": "https://github.com/jianghoucheng/AlphaEdit",
    "ice": "https://github.com/zjunlp/EasyEdit",
    "grace": "https://github.com/Thartvigsen/GRACE",
    "wise": "https://github.com/zjunlp/EasyEdit",
    "ga": "https://github.com/locuslab/tofu",
    "graddiff": "https://github.com/locuslab/tofu",
    "idk": "https://github.com/locuslab/tofu",
    "npo": "https://github.com/licong-lin/negative-preference-optimization",
    "simnpo": "https://github.com/OPTML-Group/Unlearn-Simple",
    "rmu": "https://github.com/centerforaisafety/wmdp",
    "relearn": "https://github.com/zjunlp/unlearn",
}
_ARXIV = re.compile(r"arXiv[: ]?\s*([0-9]{4}\.[0-9]{4,5})")


def method_links(name: str, url: str | None = None) -> list[tuple[str, str]]:
    """(label, address) of a method's paper and code: the submission's own `url`, then, for a
    registered method, its paper on arXiv (from the registry's citation) and reference code."""
    links = [("url", url)] if url else []
    paper = _registered_paper(name)
    m = _ARXIV.search(paper or "")
    if m:
        links.append(("paper", f"https://arxiv.org/abs/{m.group(1)}"))
    if name in REFERENCE_CODE:
        links.append(("code", REFERENCE_CODE[name]))
    seen: set[str] = set()
    return [(k, v) for k, v in links if not (v in seen or seen.add(v))]


def _registered_paper(name: str) -> str | None:
    try:
        from ksmith.methods import METHODS, load_builtin_methods
    except ImportError:
        return None
    load_builtin_methods()
    return str(METHODS.meta(name).get("paper") or "") if name in METHODS else None


def display_model(model_id: str) -> str:
    """A model as an id, never a local path: a Hub id (``org/name``) or plain name as it is,
    a path (absolute, ``./``, ``~``, or nested deeper than org/name) by its last part."""
    text = model_id.strip()
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        return PurePosixPath(text.replace("\\", "/")).name or text
    return text
