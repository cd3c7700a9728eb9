"""Stage 1: YAML is read safely, with positions, and its traps are closed."""

from __future__ import annotations

from nbrules.loader import load_source
from nbrules.sources import RuleSource


def load(text: str):
    return load_source(RuleSource.from_text("x.yaml", text))


def test_yaml_11_booleans_and_dates_stay_text() -> None:
    f = load("a: yes\nb: no\nc: on\nd: off\ne: 2021-10-01\nf: true\ng: false\nh: null\ni: 3\nj: 2.5\nk: '3'\n")
    assert f.ok
    assert f.data == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": "2021-10-01", "f": True, "g": False,
                      "h": None, "i": 3, "j": 2.5, "k": "3"}


def test_positions_are_indexed_by_json_pointer() -> None:
    f = load("rules:\n  - id: a\n    when: {fact: age_days, is: 3}\n")
    span = f.span("/rules/0/when/fact")
    assert (span.line, span.column) == (3, 18)
    key = f.span("/rules/0/when/fact", key=True)
    assert (key.line, key.column) == (3, 12)


def test_duplicate_key_reports_both_lines() -> None:
    f = load("a: 1\nb: 2\na: 3\n")
    [d] = f.diagnostics
    assert (d.code, d.line, d.column) == ("NB102", 3, 1)
    assert "line 1" in (d.hint or "")


def test_billion_laughs_is_refused_before_expansion() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)
    )
    f = load(text)
    assert not f.ok
    assert {d.code for d in f.diagnostics} == {"NB104"}


def test_python_tags_are_refused() -> None:
    f = load("a: !!python/object/apply:os.system ['echo pwned']\n")
    assert [d.code for d in f.diagnostics] == ["NB103"]
    assert f.data == {"a": ["echo pwned"]}  # loaded as plain data, never constructed


def test_merge_keys_are_refused() -> None:
    f = load("base: {x: 1}\nother:\n  <<: {x: 2}\n")
    assert [d.code for d in f.diagnostics] == ["NB104"]


def test_empty_file_is_null_data() -> None:
    f = load("")
    assert f.ok and f.data is None


def test_unreadable_file() -> None:
    src = RuleSource(name="x.yaml", display="x.yaml", path=None, data=b"", read_error="Permission denied")
    [d] = load_source(src).diagnostics
    assert d.code == "NB105" and "Permission denied" in d.message
