"""Domain names: registrable and organisational domains, and the owner's domains.

One public-suffix list per process serves every stage: the parser (org_name
reduced to its base domain, as parsedmarc does), report-mail trust (DMARC
relaxed alignment), reverse DNS (PTR base domains) and lookalike matching.
Loading the list costs ~0.1 s, so it is loaded once, on first use, and never
through parsedmarc (whose import alone costs ~0.3 s of every ingest).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList


@lru_cache(maxsize=1)
def public_suffix_list() -> PublicSuffixList:
    """The public suffix list (the copy bundled with ``publicsuffixlist``), one per process."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=1)
def _parsedmarc_overrides() -> tuple[str, ...]:
    """parsedmarc's PSL overrides (ISPs that put customer names left of a shared
    suffix), read from the file it ships without importing it."""
    spec = importlib.util.find_spec("parsedmarc")
    if spec is None or not spec.submodule_search_locations:
        return ()
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "maps", "psl_overrides.txt")
    with open(path, encoding="utf-8") as fh:
        return tuple(line.strip() for line in fh.read().splitlines() if line.strip())


@lru_cache(maxsize=4096)
def base_domain(name: str) -> str | None:
    """Registrable domain exactly as parsedmarc's ``get_base_domain`` computes it
    (public suffix list plus parsedmarc's overrides): used for org_name and PTR
    names, so dmarclens groups them as parsedmarc and its service map expect."""
    lowered = name.lower()
    found = public_suffix_list().privatesuffix(lowered)
    for suffix in _parsedmarc_overrides():
        if lowered.endswith(suffix):
            return suffix.strip(".").strip("-")
    return found


@lru_cache(maxsize=8192)
def org_domain(name: str) -> str:
    """Organisational domain (public suffix list), as DMARC relaxed alignment uses it;
    the name itself when it has none (a bare suffix, an IP)."""
    name = name.strip().strip(".").lower()
    found = public_suffix_list().privatesuffix(name)
    return found or name


def registrable_parts(ascii_domain: str) -> tuple[str, str] | None:
    """(public suffix, registrable domain) of an ASCII (punycode) name, or None when it has
    no registrable part: ``mail.example.co.uk`` → (``co.uk``, ``example.co.uk``)."""
    psl = public_suffix_list()
    registrable = psl.privatesuffix(ascii_domain)
    if not registrable:
        return None
    return psl.publicsuffix(ascii_domain) or "", registrable


def is_owned(domain: str, domains: Sequence[str]) -> bool:
    """A policy domain is the owner's when it is a listed domain or below one.

    No list configured means nothing is filtered (every report is the owner's).
    """
    if not domains:
        return True
    d = domain.strip().strip(".").lower()
    return any(d == o or d.endswith("." + o) for o in domains)
