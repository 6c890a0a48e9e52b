"""Lookalike domains: does an identifier in the reports imitate one of the user's domains?

Pure functions, no I/O. ``dmarclens enrich`` runs them over every
envelope-from and DKIM signing domain in the reports and stores the hits in
``identifier_lookalikes``; the detector calls ``lookalike_of`` directly for
its ``lookalike_identifier`` anomaly kind::

    from dmarclens.enrich.lookalike import lookalike_of
    match = lookalike_of("examp1e.com", ["example.com"])
    if match:  # LookalikeMatch(identifier, owned, technique, detail)
        ...

Why it matters in DMARC data: a spoofer who cannot pass DMARC for
``example.com`` registers ``examp1e.com`` or ``example-billing.com``, sets up
SPF and DKIM for it, and mails with ``From: example.com`` anyway or with the
lookalike in the envelope; the lookalike then shows up in the reports as an
envelope-from or DKIM ``d=`` domain next to the user's own domain.

Techniques, tested in this order (the first that fits is reported):

- ``idn_homoglyph``: an internationalized (punycode ``xn--``) name whose
  letters look the same as the domain's (Cyrillic ``е`` for ``e`` ...);
- ``homoglyph``: ASCII lookalike characters (``0``/``o``, ``1``/``l``, ``rn``/``m``, ``vv``/``w``);
- ``hyphen``: hyphens added or removed (``ex-ample``, ``acmecorp`` for ``acme-corp``);
- ``typo``: one character swapped, missing, added or replaced (labels of 4+ letters);
- ``added_word``: the domain's name plus a word (``example-login``, ``secureexample``);
- ``other_tld``: the same name under another public suffix (``example.net``, ``example.co.uk``);
- ``embedded``: the whole domain inside another one (``example.com.mail-check.net``).

The user's own domains and their subdomains are never lookalikes, nor is a
domain that is itself in the owned list (a user owning both ``example.com``
and ``example.net``).
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from dmarclens.core.domains import registrable_parts

TECHNIQUES = ("idn_homoglyph", "homoglyph", "hyphen", "typo", "added_word", "other_tld", "embedded")
MIN_LABEL_FOR_EDITS = 4
"""Below this, one edit turns a name into an unrelated one (``abc``/``abd``)."""
MIN_EXTRA_WORD = 2

# Characters that render like a Latin letter or digit, mapped to what they imitate.
# Kept small and deliberate: Cyrillic and Greek letters used in real IDN
# homograph attacks, a few Latin variants, and digits used as letters.
_CONFUSABLE = {
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i",
    "ј": "j", "к": "k", "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "г": "r",
    "ѕ": "s", "т": "t", "ц": "u", "ѵ": "v", "ԝ": "w", "х": "x", "у": "y", "ь": "b", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "γ": "y",
    # Latin look-alikes
    "ı": "i", "ł": "l", "ɩ": "i", "ɑ": "a", "ƅ": "b", "ɗ": "d", "ǀ": "l", "ɪ": "i",
    # digits and symbols used as letters
    "0": "o", "1": "l", "|": "l", "!": "i", "3": "e", "5": "s", "$": "s", "@": "a",
}
_MULTI = (("rn", "m"), ("vv", "w"), ("ii", "u"))


@dataclass(frozen=True)
class LookalikeMatch:
    """One hit: ``identifier`` imitates ``owned`` by ``technique``; ``detail`` says how."""

    identifier: str
    owned: str
    technique: str
    detail: str


def to_unicode(domain: str) -> str:
    """Punycode labels decoded (``xn--exmple-4nf.com`` → ``exämple.com``); others kept."""
    out = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError, ValueError):
                label = label[4:].encode("ascii").decode("punycode")
        out.append(label)
    return ".".join(out)


def to_ascii(domain: str) -> str:
    """Unicode labels punycode-encoded, for the public-suffix lookup."""
    out = []
    for label in domain.split("."):
        if label and not label.isascii():
            with contextlib.suppress(UnicodeError):
                label = "xn--" + label.encode("punycode").decode("ascii")
        out.append(label)
    return ".".join(out)


def split_registrable(domain: str) -> tuple[str, str, str] | None:
    """(name label, public suffix, registrable domain) in ASCII, or None.

    ``mail.example.co.uk`` → (``example``, ``co.uk``, ``example.co.uk``).
    """
    parts = registrable_parts(to_ascii(domain.strip().lower().rstrip(".")))
    if parts is None:
        return None
    suffix, registrable = parts
    label = registrable[: -len(suffix) - 1] if suffix else registrable
    return label, suffix, registrable


def skeleton(text: str) -> str:
    """What a label looks like: compatibility-folded, accents dropped, confusables mapped."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = "".join(_CONFUSABLE.get(c, c) for c in text)
    for seq, repl in _MULTI:
        text = text.replace(seq, repl)
    return text


def one_edit(a: str, b: str) -> str | None:
    """Describe how ``a`` differs from ``b`` by exactly one edit, else None.

    Edits: two neighbouring letters swapped, one letter missing, one extra,
    one replaced (Damerau–Levenshtein distance 1).
    """
    if a == b:
        return None
    la, lb = len(a), len(b)
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            i = diffs[0]
            return f'"{b[i]}" replaced by "{a[i]}"'
        if len(diffs) == 2 and diffs[1] == diffs[0] + 1:
            i, j = diffs
            if a[i] == b[j] and a[j] == b[i]:
                return f'"{b[i]}{b[j]}" swapped'
        return None
    if abs(la - lb) != 1:
        return None
    short, long_ = (a, b) if la < lb else (b, a)
    for i in range(len(long_)):
        if long_[:i] + long_[i + 1:] == short:
            return f'"{long_[i]}" missing' if la < lb else f'"{long_[i]}" added'
    return None


def _added_word(label: str, owned: str) -> str | None:
    if len(owned) < MIN_LABEL_FOR_EDITS or owned == label or owned not in label:
        return None
    rest = label.replace(owned, " ", 1)
    words = [w for w in rest.replace("-", " ").split() if w]
    if not words or any(len(w) < MIN_EXTRA_WORD for w in words):
        return None
    return " + ".join(f'"{w}"' for w in words)


@lru_cache(maxsize=4096)
def _label_shape(label: str) -> tuple[str, str, str]:
    """(Unicode form, skeleton, without hyphens) of one ASCII label."""
    text = to_unicode(label)
    return text, skeleton(text), label.replace("-", "")


def could_imitate(identifier: str, owned_domains: Iterable[str]) -> bool:
    """Can ``lookalike_of`` match at all? A necessary condition, without the public suffix list.

    Every technique compares the identifier's registrable name label with an
    owned domain's (homoglyph: same skeleton; hyphen and other_tld: equal
    without hyphens; typo: one edit; added_word: the owned label inside it),
    or finds the owned registrable domain inside the identifier (embedded).
    Those labels are not known without the list (~0.1 s to load), but each is
    one of its domain's labels and never the last one (a public suffix has
    at least one label), and a registrable domain ends in its domain's last
    two labels. So when no pair of such labels passes the comparisons, and
    the owned domain's last two labels do not occur in the identifier,
    nothing can match. Most identifiers in real reports (the user's own
    domains, ESPs, mailbox providers) are ruled out here.
    """
    ident = to_ascii(identifier.strip().lower().rstrip("."))
    if not ident:
        return False
    wrapped = "." + ident + "."
    labels = [_label_shape(x) for x in ident.split(".") if x]
    for dom in owned_domains:
        parts = to_ascii(dom.strip().lower().rstrip(".")).split(".")
        if "." + ".".join(parts[-2:]) + "." in wrapped:
            return True
        for o_label in parts[:-1]:
            if not o_label:
                continue
            o_text, o_skel, o_bare = _label_shape(o_label)
            for text, skel, bare in labels:
                if (bare == o_bare or skel == o_skel or o_text in text
                        or one_edit(text, o_text) is not None):
                    return True
    return False


def lookalike_of(identifier: str | None, owned_domains: Iterable[str]) -> LookalikeMatch | None:
    """The first way ``identifier`` imitates one of ``owned_domains``, or None.

    Both sides may be given in Unicode or punycode, any case, with or without
    a trailing dot. Subdomains of an owned domain are the user's own, not
    lookalikes.
    """
    if not identifier:
        return None
    ident = identifier.strip().lower().rstrip(".")
    owned = [d.strip().lower().rstrip(".") for d in owned_domains if d and d.strip()]
    owned_ascii = {to_ascii(d) for d in owned}
    ident_ascii = to_ascii(ident)
    if not ident or any(ident_ascii == d or ident_ascii.endswith("." + d) for d in owned_ascii):
        return None
    if not could_imitate(ident_ascii, owned):
        return None  # no technique can match: the public suffix list is not even loaded
    return _match(ident, ident_ascii, owned, owned_ascii)


def _match(ident: str, ident_ascii: str, owned: list[str], owned_ascii: set[str]) -> LookalikeMatch | None:
    """``lookalike_of`` past its cheap checks: the techniques, with the public suffix list."""
    parts = split_registrable(ident_ascii)
    if parts is None:
        return None
    label, suffix, registrable = parts
    if registrable in owned_ascii:
        return None
    label_u = to_unicode(label)
    is_idn = label_u != label or not label_u.isascii()
    best: tuple[int, LookalikeMatch] | None = None
    for dom in owned:
        mine = split_registrable(dom)
        if mine is None:
            continue
        o_label, o_suffix, o_reg = mine
        o_label_u = to_unicode(o_label)
        tld_note = "" if suffix == o_suffix else f" under .{suffix}"
        found: tuple[str, str] | None = None
        if label_u != o_label_u and skeleton(label_u) == skeleton(o_label_u):
            kind = "idn_homoglyph" if is_idn else "homoglyph"
            found = (kind, f'"{to_unicode(registrable)}" looks like "{o_reg}" (lookalike characters){tld_note}')
        elif label != o_label and label.replace("-", "") == o_label.replace("-", ""):
            found = ("hyphen", f'"{registrable}" is "{o_reg}" with hyphens changed{tld_note}')
        elif len(o_label) >= MIN_LABEL_FOR_EDITS and (edit := one_edit(label_u, o_label_u)):
            found = ("typo", f'"{registrable}" is "{o_reg}" with {edit}{tld_note}')
        elif words := _added_word(label_u, o_label_u):
            found = ("added_word", f'"{registrable}" is "{o_reg}" with {words} added{tld_note}')
        elif label == o_label and suffix != o_suffix:
            found = ("other_tld", f'"{registrable}" is "{o_reg}" under another suffix (.{suffix})')
        elif ("." + o_reg + ".") in ("." + ident_ascii + "."):
            found = ("embedded", f'"{ident}" contains "{o_reg}" but belongs to "{registrable}"')
        if found:
            rank = TECHNIQUES.index(found[0])
            if best is None or rank < best[0]:
                best = (rank, LookalikeMatch(ident, dom, found[0], found[1]))
    return best[1] if best else None


def find_lookalikes(identifiers: Iterable[str], owned_domains: Iterable[str]) -> list[LookalikeMatch]:
    """``lookalike_of`` over many identifiers (duplicates checked once)."""
    owned = list(owned_domains)
    out = []
    for ident in dict.fromkeys(i for i in identifiers if i):
        match = lookalike_of(ident, owned)
        if match:
            out.append(match)
    return out
