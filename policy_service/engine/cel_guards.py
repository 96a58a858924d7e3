"""Which nullable variables a CEL expression reads without a null check guarding the read.

A variable that is null for some requests (`create_group_num` when Chat omits CreateGroupNum)
makes `create_group_num > 3` fail at run time, and a rule whose `when` fails is skipped: a
deny rule lets the request through. `policy check` warns about such reads; this module finds
them in the expression's syntax tree (policy_service/engine/cel_syntax.py), by these rules, which
follow how CEL evaluates:

- Null is harmless as an operand of `==` and `!=` (`null == 3` is false), on the left of `in`,
  and as the argument of `type()`. Any other use of the variable is a read that fails on null:
  an order comparison, arithmetic, a field, an index, a function's argument or receiver, an
  operand of `&&`, `||`, `!` or `?:`, or the whole result.
- A read is guarded where the variable is known not to be null. `a && b`: each side is
  guarded by what the other side being true says (CEL's `&&` is false when either side is,
  whatever error the other one has); `a || b`: by what the other side being false says;
  `c ? x : y`: `x` by `c` true, `y` by `c` false.
- `v != null` true, `v == null` false, `v == LITERAL` true and `v != LITERAL` false (a
  literal other than null) say `v` is not null; `!`, `&&`, `||` and `?:` combine what their
  operands say.
- Inside a comprehension (`all`, `exists`, `exists_one`, `map`, `filter`), the macro's own
  variable hides a request variable of the same name.

An expression this parser cannot read gets no warning: the check only ever adds warnings.
"""

from __future__ import annotations

from policy_service.engine.cel_syntax import CelSyntaxError, Node, parse

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def unguarded_reads(expression: str, nullable: frozenset[str]) -> frozenset[str]:
    """The variables of `nullable` that the expression reads where null makes it fail."""
    if not nullable:
        return frozenset()
    try:
        tree = parse(expression)
    except CelSyntaxError:
        return frozenset()
    return frozenset(_reads(tree, nullable, frozenset()))


def _reads(node: Node, nullable: frozenset[str], known: frozenset[str]) -> set[str]:
    """The nullable variables `node` reads unguarded, where `known` are known not null."""
    kind, children = node.kind, node.children
    if kind == "ident":
        return {node.name} if node.name in nullable - known else set()
    if kind == "op" and node.name in ("==", "!="):
        return _operand(children[0], nullable, known) | _operand(children[1], nullable, known)
    if kind == "op" and node.name == "in":
        return _operand(children[0], nullable, known) | _reads(children[1], nullable, known)
    if kind == "call" and node.name == "type" and not node.member and len(children) == 1:
        return _operand(children[0], nullable, known)
    if kind in ("and", "or"):
        truth = kind == "and"  # what the other side must be for this side to matter
        left, right = children
        return _reads(left, nullable, known | _implied(right, truth)) | _reads(
            right, nullable, known | _implied(left, truth)
        )
    if kind == "cond":
        condition, then, otherwise = children
        return (
            _reads(condition, nullable, known)
            | _reads(then, nullable, known | _implied(condition, True))
            | _reads(otherwise, nullable, known | _implied(condition, False))
        )
    if kind == "call" and node.member and node.name in _MACROS and len(children) >= 3:
        target, bound, *body = children
        if bound.kind == "ident":
            inner = nullable - {bound.name}
            return _reads(target, nullable, known).union(
                *(_reads(part, inner, known) for part in body)
            )
    return set().union(*(_reads(child, nullable, known) for child in children))


def _operand(node: Node, nullable: frozenset[str], known: frozenset[str]) -> set[str]:
    """Reads of an operand where null is harmless: a variable itself is no failing read."""
    return set() if node.kind == "ident" else _reads(node, nullable, known)


def _implied(node: Node, truth: bool) -> frozenset[str]:
    """The variables known not null when `node` evaluates to `truth`."""
    kind, children = node.kind, node.children
    if kind == "not":
        return _implied(children[0], not truth)
    if kind in ("and", "or"):
        left, right = _implied(children[0], truth), _implied(children[1], truth)
        # Both sides are known when `and` is true or `or` is false; else only one of them.
        return left | right if truth == (kind == "and") else left & right
    if kind == "cond":
        condition, then, otherwise = children
        return (_implied(condition, True) | _implied(then, truth)) & (
            _implied(condition, False) | _implied(otherwise, truth)
        )
    if kind == "op" and node.name in ("==", "!="):
        names = [c.name for c in children if c.kind == "ident"]
        others = [c.kind for c in children if c.kind != "ident"]
        if len(names) == 1 and others in (["null"], ["literal"]):
            # `v != null` and `v == 3` when true, `v == null` and `v != 3` when false.
            equal = (node.name == "==") == truth
            return frozenset(names) if equal != (others == ["null"]) else frozenset()
    return frozenset()
