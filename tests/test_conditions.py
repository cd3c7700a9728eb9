"""Condition semantics: negation normal form and three-valued evaluation."""

from __future__ import annotations

from nbrules.conditions import FALSE, TRUE, And, Atom, Or, evaluate, to_nnf
from nbrules.model import All, AnyOf, CondRef, Not, ParamRef, ParamTest, Test


def t(fact: str, op: str, value: object) -> Test:
    return Test(fact, op, value, f"/{fact}")


def test_negation_is_pushed_to_the_atoms() -> None:
    cond = Not(All((t("age_days", "less_than", 547), t("mycn_status", "is", "amplified")), ""), "")
    nnf = to_nnf(cond, {}, {})
    assert nnf == Or((Atom("age_days", "ge", 547, "/age_days"), Atom("mycn_status", "ne", "amplified", "/mycn_status")))


def test_list_operators_negate_to_their_duals() -> None:
    ops = {"contains_any": "none", "contains_all": "notall", "subset_of": "notsubset"}
    for op, neg in ops.items():
        assert to_nnf(Not(t("symptoms", op, ("coagulopathy",)), ""), {}, {}).op == neg  # type: ignore[union-attr]
    assert to_nnf(Not(t("symptoms", "empty", True), ""), {}, {}).op == "nonempty"  # type: ignore[union-attr]
    assert to_nnf(Not(t("ploidy", "known", False), ""), {}, {}).op == "known"  # type: ignore[union-attr]


def test_parameters_fold_and_simplify() -> None:
    policy = ParamTest("policy", "is", "unfavorable", "")
    cond = AnyOf((t("chr11q_status", "is", "aberrant"), All((policy, t("chr11q_status", "known", False)), "")), "")
    assert to_nnf(cond, {}, {"policy": "indeterminate"}) == Atom("chr11q_status", "eq", "aberrant", "/chr11q_status")
    folded = to_nnf(cond, {}, {"policy": "unfavorable"})
    assert isinstance(folded, Or) and len(folded.items) == 2
    assert to_nnf(Not(policy, ""), {}, {"policy": "unfavorable"}) is FALSE
    assert to_nnf(All((policy,), ""), {}, {"policy": "unfavorable"}) is TRUE


def test_parameter_values_and_named_conditions_resolve() -> None:
    named = {"infant": t("age_days", "less_than", ParamRef("limit"))}
    nnf = to_nnf(Not(CondRef("infant", ""), ""), named, {"limit": 365})
    assert nnf == Atom("age_days", "ge", 365, "/age_days")


def test_kleene_logic_with_missing_facts() -> None:
    young = Atom("age_days", "lt", 547, "")
    amp = Atom("mycn_status", "eq", "amplified", "")
    assert evaluate(And((young, amp)), {"age_days": 100}) is None
    assert evaluate(And((young, amp)), {"age_days": 900}) is False
    assert evaluate(Or((young, amp)), {"age_days": 100}) is True
    assert evaluate(Or((young, amp)), {"age_days": 900}) is None
    assert evaluate(Atom("mycn_status", "ne", "amplified", ""), {}) is None
    assert evaluate(Atom("mycn_status", "unknown", None, ""), {}) is True


def test_list_semantics_on_empty_lists() -> None:
    assert evaluate(Atom("s", "subset", ("liver",), ""), {"s": []}) is True
    assert evaluate(Atom("s", "any", ("liver",), ""), {"s": []}) is False
    assert evaluate(Atom("s", "none", ("liver",), ""), {"s": []}) is True
    assert evaluate(Atom("s", "all", ("liver",), ""), {"s": []}) is False


def test_every_written_operator_and_its_negation_are_complements() -> None:
    """Each written operator becomes one atom and its negation the complementary atom: on a
    present value exactly one of the two is true (Kleene negation; a missing fact is unknown)."""
    import typing

    from nbrules.conditions import AtomOp, atom_op, value_test
    from nbrules.model import TEST_OPERATORS

    samples: dict[str, list[tuple[object, object]]] = {
        "scalar": [(x, v) for x in (1, 547, "amplified") for v in (0, 1, 547, 600, "amplified", "not_amplified")
                   if type(x) is type(v)],
        "member": [(("a", "b"), v) for v in ("a", "c")],
        "set": [(("a", "b"), v) for v in ((), ("a",), ("a", "b"), ("c",), ("a", "c"))],
    }
    kind = {"is": "scalar", "less_than": "scalar", "at_most": "scalar", "greater_than": "scalar",
            "at_least": "scalar", "in": "member", "contains_any": "set", "contains_all": "set", "subset_of": "set",
            "empty": "set"}
    produced = set()
    for op in TEST_OPERATORS:
        pos, neg = atom_op(op, False), atom_op(op, True)
        produced |= {pos, neg}
        assert pos != neg
        if op == "known":
            assert (pos, neg) == ("known", "unknown")
            continue
        for x, v in samples[kind[op]]:
            assert value_test(pos, x)(v) is (not value_test(neg, x)(v)), (op, x, v)
    assert produced == set(typing.get_args(AtomOp))  # every atom operator comes from a written test


def test_a_visitor_must_handle_every_node_type() -> None:
    import pytest

    from nbrules.conditions import ConditionVisitor

    class Partial(ConditionVisitor[int]):  # no ref()
        def test(self, c: Test) -> int:
            return 1

        def param_test(self, c: ParamTest) -> int:
            return 1

        def all(self, c: All) -> int:
            return sum(self.items(c))

        def any(self, c: AnyOf) -> int:
            return sum(self.items(c))

        def not_(self, c: Not) -> int:
            return self.visit(c.item)

    with pytest.raises(TypeError):
        Partial()  # type: ignore[abstract]

    class Count(Partial):
        def ref(self, c: CondRef) -> int:
            return 0

    cond = All((t("a", "is", 1), Not(AnyOf((t("b", "is", 2), CondRef("x", "")), ""), "")), "")
    assert Count().visit(cond) == 2


def test_normal_form_equates_equivalent_writings_only() -> None:
    from nbrules.conditions import normal_form

    a, b = t("mycn_status", "is", "amplified"), t("age_days", "less_than", 547)
    gate = ParamTest("policy", "is", "strict", "")
    base = normal_form(All((a, b), ""), {}, {"policy": "lenient"})
    assert normal_form(All((b, a, b), ""), {}, {}) == base  # order and repeats
    assert normal_form(Not(AnyOf((Not(a, ""), Not(b, "")), ""), ""), {}, {}) == base  # De Morgan
    assert normal_form(All((CondRef("young", ""), t("mycn_status", "in", ("amplified",))), ""),
                       {"young": b}, {}) == base  # named condition written out, a list of one value
    assert normal_form(All((a, t("age_days", "at_most", 547)), ""), {}, {}) != base
    # a parameter test is kept even where the parameters in force make it false
    gated = normal_form(All((gate, a), ""), {}, {"policy": "lenient"})
    assert gated != normal_form(All((gate, b), ""), {}, {"policy": "lenient"})
    # a parameter used as a value is compared by name and value
    ref = t("age_days", "less_than", ParamRef("limit"))
    assert normal_form(ref, {}, {"limit": 547}) != normal_form(ref, {}, {"limit": 548})
    assert normal_form(ref, {}, {"limit": 547}) != normal_form(b, {}, {})
