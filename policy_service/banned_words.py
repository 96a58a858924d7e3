"""Banned words and phrases, matched inside group names with one Aho-Corasick automaton.

Words and names are compared after Unicode NFKC normalisation and case folding, so that
full-width letters, ligatures and case variants of a banned word match it. Matching one name
costs time in proportion to the name, whether the list has 10 words or 100,000.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import ahocorasick


def fold(text: str) -> str:
    """NFKC, case folded, NFKC again (folding can undo the normal form): the compared form."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


class BannedWords:
    """A set of banned words or phrases; a name containing any of them is banned."""

    def __init__(self, words: Iterable[str]) -> None:
        """Build the automaton; words that fold to nothing (blank) are left out."""
        self._automaton = ahocorasick.Automaton()
        for word in words:
            folded = fold(word).strip()
            if folded:
                self._automaton.add_word(folded, word)
        self.size = len(self._automaton)
        if self.size:
            self._automaton.make_automaton()

    def first_in(self, text: str) -> str | None:
        """The banned word (as listed) that ends first in the folded text, or None."""
        if not self.size:
            return None
        for _end, word in self._automaton.iter(fold(text)):
            return str(word)
        return None
