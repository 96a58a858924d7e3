"""Banned words and phrases, matched inside group names with one Aho-Corasick automaton.

Words and names are compared after Unicode NFKC normalisation and case folding, so that
full-width letters, ligatures and case variants of a banned word match it. The automaton runs
over UTF-8 bytes (as latin-1 text), so no node has more than 256 children: matching one name
costs time in proportion to the name, whether the list has 10 words or 100,000, in any script.
A byte match of a whole UTF-8 word always starts and ends on character boundaries.
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
                self._automaton.add_word(_bytes(folded), word)
        self.size = len(self._automaton)
        if self.size:
            self._automaton.make_automaton()

    def first_in(self, folded: str) -> str | None:
        """The banned word (as listed) that ends first in text already passed through fold."""
        if not self.size:
            return None
        for _end, word in self._automaton.iter(_bytes(folded)):
            return str(word)
        return None


def _bytes(text: str) -> str:
    """The UTF-8 bytes of text, one character per byte."""
    return text.encode().decode("latin-1")
