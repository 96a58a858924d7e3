"""A parser of CEL expressions into a syntax tree, for checks the interpreter cannot make.

The interpreter (common-expression-language) compiles and runs CEL but shows no syntax tree,
so this module parses the grammar of the CEL spec (langdef.md) itself: operators with their
precedence, member selection, calls, indexing, list, map and message literals. It meets only
expressions the interpreter has already compiled; on anything else it raises CelSyntaxError.
Literals are kept as `null` or `literal` alone: the checks need no values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kinds of Node: ident (name), null, literal, select (name: the field; operand), call (name:
# the function; children: the receiver when `member` is set, then the arguments), index, list,
# map (keys and values in turn), struct (a message literal: its field values), op (name: the
# operator; two operands), not, neg, and, or, cond (condition, then, else).


@dataclass(frozen=True)
class Node:
    """One node of the tree: its kind, a name for the kinds that have one, its children."""

    kind: str
    name: str = ""
    children: tuple[Node, ...] = ()
    member: bool = False  # a call with a receiver (`members.exists(...)`), first in children


class CelSyntaxError(ValueError):
    """The text is not CEL this parser knows."""


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
    |(?P<string>
        # Raw strings have no escapes: r"\" ends at its second quote.
        (?:[rR][bB]?|[bB][rR])(?:\"\"\".*?\"\"\"|'''.*?'''|"[^"\n]*"|'[^'\n]*')
        |[bB]?(?:\"\"\"(?:\\.|.)*?\"\"\"|'''(?:\\.|.)*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)
_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_RESERVED = frozenset({"in", "true", "false", "null"})


def parse(expression: str) -> Node:
    """The syntax tree of a CEL expression; CelSyntaxError when it is not CEL."""
    return _Parser(_tokens(expression)).expression_only()


def _tokens(expression: str) -> list[tuple[str, str]]:
    """(kind, text) of each token: string, number, name or punct; no spaces or comments."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise CelSyntaxError(f"unexpected {expression[position]!r} at {position}")
        if match.lastgroup != "space":
            tokens.append((str(match.lastgroup), match.group()))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over the tokens, one method per rule of the grammar."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self._tokens = tokens
        self._next = 0

    def expression_only(self) -> Node:
        node = self.expression()
        if self._peek():
            raise CelSyntaxError(f"unexpected {self._peek()!r}")
        return node

    def expression(self) -> Node:
        condition = self._or()
        if not self._take("?"):
            return condition
        then = self._or()
        self._expect(":")
        return Node("cond", children=(condition, then, self.expression()))

    def _or(self) -> Node:
        node = self._and()
        while self._take("||"):
            node = Node("or", children=(node, self._and()))
        return node

    def _and(self) -> Node:
        node = self._relation()
        while self._take("&&"):
            node = Node("and", children=(node, self._relation()))
        return node

    def _relation(self) -> Node:
        node = self._addition()
        while self._peek() in _RELATIONS:
            operator = self._advance()
            node = Node("op", operator, (node, self._addition()))
        return node

    def _addition(self) -> Node:
        node = self._multiplication()
        while self._peek() in ("+", "-"):
            operator = self._advance()
            node = Node("op", operator, (node, self._multiplication()))
        return node

    def _multiplication(self) -> Node:
        node = self._unary()
        while self._peek() in ("*", "/", "%"):
            operator = self._advance()
            node = Node("op", operator, (node, self._unary()))
        return node

    def _unary(self) -> Node:
        if self._take("!"):
            return Node("not", children=(self._unary(),))
        if self._take("-"):
            return Node("neg", children=(self._unary(),))
        return self._member()

    def _member(self) -> Node:
        node = self._primary()
        while True:
            if self._take("."):
                name = self._identifier()
                if self._take("("):
                    node = Node("call", name, (node, *self._list(")")), member=True)
                else:
                    node = Node("select", name, (node,))
            elif self._take("["):
                node = Node("index", children=(node, self.expression()))
                self._expect("]")
            elif self._peek() == "{" and node.kind in ("ident", "select"):
                self._advance()
                node = Node("struct", children=self._fields())
            else:
                return node

    def _primary(self) -> Node:
        kind, token = self._token()
        if token == ".":  # a name from the root scope: `.name`
            kind, token = self._token()
        if token == "(":
            node = self.expression()
            self._expect(")")
            return node
        if token == "[":
            return Node("list", children=self._list("]"))
        if token == "{":
            return Node("map", children=self._entries())
        if token == "null":
            return Node("null")
        if kind in ("string", "number") or token in ("true", "false"):
            return Node("literal")
        if kind == "name" and token not in _RESERVED:
            if self._take("("):
                return Node("call", token, self._list(")"))
            return Node("ident", token)
        raise CelSyntaxError(f"unexpected {token!r}")

    def _list(self, closing: str) -> tuple[Node, ...]:
        """Expressions separated by commas up to `closing` (a trailing comma allowed)."""
        items: list[Node] = []
        while not self._take(closing):
            items.append(self.expression())
            if not self._take(","):
                self._expect(closing)
                break
        return tuple(items)

    def _entries(self) -> tuple[Node, ...]:
        """`key: value` pairs up to `}`, as keys and values in turn."""
        items: list[Node] = []
        while not self._take("}"):
            items.append(self.expression())
            self._expect(":")
            items.append(self.expression())
            if not self._take(","):
                self._expect("}")
                break
        return tuple(items)

    def _fields(self) -> tuple[Node, ...]:
        """`field: value` pairs of a message literal up to `}`, as the values."""
        values: list[Node] = []
        while not self._take("}"):
            self._identifier()
            self._expect(":")
            values.append(self.expression())
            if not self._take(","):
                self._expect("}")
                break
        return tuple(values)

    def _identifier(self) -> str:
        kind, token = self._token()
        if kind != "name":
            raise CelSyntaxError(f"expected a name, got {token!r}")
        return token

    def _peek(self) -> str:
        """The next token's text; "" at the end."""
        return self._tokens[self._next][1] if self._next < len(self._tokens) else ""

    def _token(self) -> tuple[str, str]:
        """The next token's kind and text, taken."""
        if self._next == len(self._tokens):
            raise CelSyntaxError("unexpected end")
        self._next += 1
        return self._tokens[self._next - 1]

    def _advance(self) -> str:
        """The next token's text, taken."""
        return self._token()[1]

    def _take(self, token: str) -> bool:
        if self._peek() != token:
            return False
        self._next += 1
        return True

    def _expect(self, token: str) -> None:
        if not self._take(token):
            raise CelSyntaxError(f"expected {token!r}, got {self._peek() or 'the end'!r}")
