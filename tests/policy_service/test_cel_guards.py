"""Finding reads of a nullable CEL variable that no null check guards, with the interpreter as
the judge of which expressions fail on null."""

from __future__ import annotations

import itertools

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_service.engine.cel_conditions import NULLABLE_VARIABLES
from policy_service.engine.cel_guards import unguarded_reads
from policy_service.engine.cel_syntax import CelSyntaxError, parse

NULLABLE = frozenset(NULLABLE_VARIABLES)

# Every value the other variables take while an expression is judged: enough to take each
# branch of the generated expressions below.
OTHERS = {"name": ["x", "y"], "members": [[], ["a"]]}

ATOMS = [
    "create_group_num > 3",
    "create_group_num + 1 > 2",
    "create_group_num != null",
    "create_group_num == null",
    "create_group_num == 2",
    "create_group_num != 2",
    "create_group_num in [1, 2]",
    "type(create_group_num) == int",
    "name == 'x'",
    "size(members) > 0",
    "[1].exists(create_group_num, create_group_num > 0)",
]


def fails_on_null(expression: str) -> bool:
    """True when the interpreter fails, or gives no bool, for some request whose nullable
    variables are null."""
    program = cel.compile(expression)
    for values in itertools.product(*OTHERS.values()):
        context = dict(zip(OTHERS, values, strict=True))
        context.update(dict.fromkeys(NULLABLE))
        try:
            result = program.execute(cel.Context(context))
        except Exception:  # The interpreter's errors have no common base class.
            return True
        if not isinstance(result, bool):
            return True
    return False


expressions = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: f"({p[0]} && {p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]} || {p[1]})"),
        inner.map(lambda a: f"!({a})"),
        st.tuples(inner, inner, inner).map(lambda p: f"({p[0]} ? {p[1]} : {p[2]})"),
        inner.map(lambda a: f"members.exists(m, {a})"),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, database=None)
@given(expressions)
def test_every_expression_that_fails_on_null_is_found(expression: str) -> None:
    """No false negative: whenever the interpreter fails on a null create_group_num for some
    request, the expression is reported as reading it unguarded."""
    if fails_on_null(expression):
        assert unguarded_reads(expression, NULLABLE) == {"create_group_num"}


@pytest.mark.parametrize(
    "expression",
    [
        "create_group_num != null && create_group_num > 3",
        "create_group_num > 3 && create_group_num != null",
        "create_group_num == null || create_group_num > 3",
        "create_group_num > 3 || create_group_num == null",
        "create_group_num != null ? create_group_num > 3 : false",
        "create_group_num == null ? false : create_group_num > 3",
        "!(create_group_num == null) && create_group_num > 3",
        "create_group_num == 5 && create_group_num > 1",
        "size(members) > 2 && (create_group_num == null || create_group_num > 3)",
        "create_group_num != null && (name == '' || create_group_num > 1)",
    ],
)
def test_a_guarded_read_is_not_reported_and_does_not_fail(expression: str) -> None:
    """The guards docs/policies.md shows, in either order, and what a condition implies through
    `!`, `&&`, `||` and `?:`: not reported, and the interpreter agrees they never fail."""
    assert unguarded_reads(expression, NULLABLE) == frozenset()
    assert not fails_on_null(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "create_group_num",
        "create_group_num == null ? create_group_num > 3 : false",
        "(create_group_num != null || name != '') && create_group_num > 1",
        "members.exists(m, m == 'a') && create_group_num > 1",
    ],
)
def test_a_read_the_guard_does_not_cover_is_reported(expression: str) -> None:
    """A guard on the wrong branch, or one that an `||` weakens, guards nothing."""
    assert unguarded_reads(expression, NULLABLE) == {"create_group_num"}


@pytest.mark.parametrize(
    "expression",
    [
        'r"a\\" + "b\\"c" + """x\ny""" + b"z" == name',
        "{'a': [1, 2,], 'b': 0x1Fu}['a'].size() > 1 && 1.5e3 > -.5",
        "a.b.C{x: 1, y: 2} != null",
        ".name in ['x'] // a comment",
        "!!((time.getHours() + 8) % 24 >= 20)",
        "members.map(m, m + '!').filter(m, m.startsWith('a')).size() == 0",
    ],
)
def test_the_parser_reads_the_whole_grammar(expression: str) -> None:
    """Strings of every kind, comments, numbers, maps, lists, messages, root-scope names,
    macros and chained calls parse."""
    parse(expression)


@pytest.mark.parametrize("text", ["a &&", "(a", "a b", "1 +* 2", "'open"])
def test_text_that_is_not_cel_is_a_syntax_error(text: str) -> None:
    """The parser refuses what is not CEL, and the check then reports nothing."""
    with pytest.raises(CelSyntaxError):
        parse(text)
    assert unguarded_reads(text, NULLABLE) == frozenset()
