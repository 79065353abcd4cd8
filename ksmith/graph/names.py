"""Name generators: synthetic, pronounceable, deterministic names for fictional worlds.

Names made from a seed cannot leak from pretraining (docs/specs.md, "Names"). A generator is
registered in `NAME_GENERATORS` and called as ``gen(rng, n, taken, **params) -> list[str]``: it
returns `n` new names, none in `taken`, and adds them to `taken`. Third parties register more
through the ``ksmith.name_generators`` entry-point group.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ksmith.errors import KsmithError
from ksmith.registry import Registry

NameGenerator = Callable[..., list[str]]
NAME_GENERATORS: Registry[NameGenerator] = Registry("name generator", "ksmith.name_generators")

ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "th",
    "sh",
    "br",
    "dr",
    "kr",
    "tr",
)
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "", "n", "r", "l", "s")


@NAME_GENERATORS.register("syllables")
def syllables(
    rng: random.Random,
    n: int,
    taken: set[str],
    *,
    min_syllables: int = 2,
    max_syllables: int = 3,
    suffix: str = "",
    onsets: tuple[str, ...] | list[str] = ONSETS,
    vowels: tuple[str, ...] | list[str] = VOWELS,
    codas: tuple[str, ...] | list[str] = CODAS,
) -> list[str]:
    """Capitalised consonant-vowel(-coda) words such as "Toravin" or "Shelumar".

    When the syllable space at the current length is nearly used up the length grows, so large
    worlds (10^5 names) still finish quickly.
    """
    if not 1 <= min_syllables <= max_syllables:
        raise KsmithError(
            f"syllables: need 1 <= min_syllables <= max_syllables, got "
            f"{min_syllables}, {max_syllables}"
        )
    out: list[str] = []
    lo, hi = min_syllables, max_syllables
    misses = 0
    while len(out) < n:
        k = rng.randint(lo, hi)
        parts = []
        for i in range(k):
            coda = rng.choice(codas) if i == k - 1 else ""
            parts.append(rng.choice(onsets) + rng.choice(vowels) + coda)
        name = "".join(parts).capitalize() + suffix
        if name in taken:
            misses += 1
            if misses > 50:  # space nearly exhausted at these lengths: allow longer names
                lo, hi, misses = lo + 1, hi + 1, 0
            continue
        misses = 0
        taken.add(name)
        out.append(name)
    return out


@NAME_GENERATORS.register("numbered")
def numbered(
    rng: random.Random, n: int, taken: set[str], *, prefix: str = "E", suffix: str = ""
) -> list[str]:
    """Plain numbered names ("E0", "E1", ...): readable in debugging, no linguistic cues."""
    del rng
    out: list[str] = []
    i = 0
    while len(out) < n:
        name = f"{prefix}{i}{suffix}"
        i += 1
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out
