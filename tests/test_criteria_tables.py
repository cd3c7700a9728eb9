"""Each decision against the rows of criteria.md, with expectations written from the tables.

These are independent of the rule files' own cases: every row of INPC table 4.3,
INRG §5.1 (A-R), COG version 2 §6.2 (V2-1..V2-17), the INSS-era tables §6.1
(v1-1..v1-20) and the INRG/COG discordances of §6.3 is evaluated through the whole
engine.
"""

from __future__ import annotations

import shutil
from typing import Any, Iterator

import pytest

from nbrules import RuleEngine

from .conftest import REPO

FH, UH = "favorable", "unfavorable"
NA, AMP = "not_amplified", "amplified"


def out(engine: RuleEngine, name: str, **facts: Any) -> str | None:
    return engine.evaluate(facts).outputs[name]


# --- INPC, criteria.md table 4.3 and §4.4 ------------------------------------------------

INPC_ROWS = [
    # (category, age_days, grade, mki, expected)      row of table 4.3
    ("neuroblastoma", 100, "poorly_differentiated", "low", FH),          # NB < 1.5 y FH
    ("neuroblastoma", 100, "poorly_differentiated", "intermediate", FH),
    ("neuroblastoma", 100, "differentiating", "low", FH),
    ("neuroblastoma", 100, "differentiating", "intermediate", FH),
    ("neuroblastoma", 100, "undifferentiated", "low", UH),               # NB < 1.5 y UH (a)
    ("neuroblastoma", 100, "differentiating", "high", UH),               # NB < 1.5 y UH (b)
    ("neuroblastoma", 1000, "differentiating", "low", FH),               # NB 1.5-5 y FH
    ("neuroblastoma", 1000, "poorly_differentiated", "low", UH),         # NB 1.5-5 y UH (a)
    ("neuroblastoma", 1000, "undifferentiated", "low", UH),
    ("neuroblastoma", 1000, "differentiating", "intermediate", UH),      # NB 1.5-5 y UH (b)
    ("neuroblastoma", 1000, "differentiating", "high", UH),
    ("neuroblastoma", 2000, "differentiating", "low", UH),               # NB >= 5 y: all UH
    ("ganglioneuroblastoma_nodular", 100, "differentiating", "low", FH),  # §4.4: nodule as NB
    ("ganglioneuroblastoma_nodular", 2000, "differentiating", "low", UH),
]


@pytest.mark.parametrize("category, age, grade, mki, expected", INPC_ROWS)
def test_inpc_table(engine: RuleEngine, category: str, age: int, grade: str, mki: str, expected: str) -> None:
    assert out(engine, "inpc_histology", histology_category=category, age_days=age,
               differentiation_grade=grade, mki=mki) == expected


@pytest.mark.parametrize("category", ["ganglioneuroblastoma_intermixed", "ganglioneuroma_maturing",
                                      "ganglioneuroma_mature"])
@pytest.mark.parametrize("age", [10, 600, 4000])
def test_inpc_stroma_rich_is_favourable_at_any_age(engine: RuleEngine, category: str, age: int) -> None:
    assert out(engine, "inpc_histology", histology_category=category, age_days=age) == FH


@pytest.mark.parametrize("count, expected", [(0, "low"), (99, "low"), (100, "intermediate"), (200, "intermediate"),
                                             (201, "high"), (4000, "high")])
def test_mki_classes_per_5000_cells(engine: RuleEngine, count: int, expected: str) -> None:
    assert out(engine, "mki", mki_count=count) == expected


def test_pathologist_fh_is_used_as_given(engine: RuleEngine) -> None:
    r = engine.evaluate({"inpc_histology": FH, "histology_category": "neuroblastoma", "age_days": 2500})
    assert r.outputs["inpc_histology"] == FH and "inpc_histology" in r.from_input
    assert [w["code"] for w in r.warnings] == ["NB521"]  # the table would say UH at >= 5 years


# --- INRG, criteria.md §5.1 --------------------------------------------------------------

INRG_ROWS = [
    # row, facts, (group, risk)
    ("A", dict(inrgss_stage="L2", histology_category="ganglioneuroma_maturing", age_days=2000), ("A", "very_low")),
    ("A", dict(inrgss_stage="L1", histology_category="ganglioneuroblastoma_intermixed"), ("A", "very_low")),
    ("B", dict(inrgss_stage="L1", histology_category="neuroblastoma", mycn_status=NA), ("B", "very_low")),
    ("K", dict(inrgss_stage="L1", histology_category="neuroblastoma", mycn_status=AMP), ("K", "high")),
    ("D", dict(inrgss_stage="L2", age_days=400, histology_category="neuroblastoma", mycn_status=NA,
               chr11q_status="normal"), ("D", "low")),
    ("G", dict(inrgss_stage="L2", age_days=400, histology_category="ganglioneuroblastoma_nodular", mycn_status=NA,
               chr11q_status="aberrant"), ("G", "intermediate")),
    ("E", dict(inrgss_stage="L2", age_days=700, histology_category="neuroblastoma",
               differentiation_grade="differentiating", mycn_status=NA, chr11q_status="normal"), ("E", "low")),
    ("H-a", dict(inrgss_stage="L2", age_days=700, histology_category="neuroblastoma",
                 differentiation_grade="differentiating", mycn_status=NA, chr11q_status="aberrant"), ("H", "intermediate")),
    ("H-b", dict(inrgss_stage="L2", age_days=700, histology_category="neuroblastoma",
                 differentiation_grade="undifferentiated", mycn_status=NA, chr11q_status="normal"), ("H", "intermediate")),
    ("N", dict(inrgss_stage="L2", age_days=700, histology_category="neuroblastoma", mycn_status=AMP), ("N", "high")),
    ("F", dict(inrgss_stage="M", age_days=500, mycn_status=NA, ploidy="hyperdiploid"), ("F", "low")),
    ("I", dict(inrgss_stage="M", age_days=300, mycn_status=NA, ploidy="diploid"), ("I", "intermediate")),
    ("J", dict(inrgss_stage="M", age_days=400, mycn_status=NA, ploidy="diploid"), ("J", "intermediate")),
    ("O", dict(inrgss_stage="M", age_days=400, mycn_status=AMP), ("O", "high")),
    ("P", dict(inrgss_stage="M", age_days=2000, mycn_status=NA, ploidy="hyperdiploid"), ("P", "high")),
    ("C", dict(inrgss_stage="MS", age_days=400, mycn_status=NA, chr11q_status="normal"), ("C", "very_low")),
    ("Q", dict(inrgss_stage="MS", age_days=100, mycn_status=NA, chr11q_status="aberrant"), ("Q", "high")),
    ("R", dict(inrgss_stage="MS", age_days=100, mycn_status=AMP), ("R", "high")),
]


@pytest.mark.parametrize("row, facts, expected", INRG_ROWS, ids=[r[0] for r in INRG_ROWS])
def test_inrg_table(engine: RuleEngine, row: str, facts: dict, expected: tuple[str, str]) -> None:
    r = engine.evaluate(facts)
    assert (r.outputs["inrg_group"], r.outputs["inrg_risk"]) == expected


def test_inrg_covers_all_sixteen_groups() -> None:
    assert sorted({g for _, _, (g, _) in INRG_ROWS}) == sorted("ABCDEFGHIJKNOPQR")


# --- COG version 2, criteria.md §6.2 ------------------------------------------------------

FAV = dict(inpc_histology=FH, ploidy="hyperdiploid", chr11q_status="normal", chr1p_status="normal")
V2_ROWS = [
    ("V2-1", dict(inrgss_stage="L1", mycn_status=NA), "low"),
    ("V2-2", dict(inrgss_stage="L1", mycn_status=AMP, resection_extent="complete"), "low"),
    ("V2-3", dict(inrgss_stage="L1", mycn_status=AMP, resection_extent="incomplete"), "high"),
    ("V2-4", dict(inrgss_stage="L2", age_days=500, mycn_status=NA, inpc_histology=UH, chr11q_status="aberrant"),
     "intermediate"),
    ("V2-5", dict(inrgss_stage="L2", age_days=1000, mycn_status=NA, inpc_histology=FH), "intermediate"),
    ("V2-6", dict(inrgss_stage="L2", age_days=1000, mycn_status=NA, inpc_histology=UH), "high"),
    ("V2-7", dict(inrgss_stage="L2", age_days=100, mycn_status=AMP), "high"),
    ("V2-8", dict(inrgss_stage="M", age_days=200, mycn_status=NA, inpc_histology=UH, ploidy="diploid"), "intermediate"),
    ("V2-9", dict(inrgss_stage="M", age_days=400, mycn_status=NA, **FAV), "intermediate"),
    ("V2-10", dict(inrgss_stage="M", age_days=400, mycn_status=NA, **{**FAV, "inpc_histology": UH}), "high"),
    ("V2-11", dict(inrgss_stage="M", age_days=400, mycn_status=AMP), "high"),
    ("V2-12", dict(inrgss_stage="M", age_days=600), "high"),
    ("V2-13", dict(inrgss_stage="MS", age_days=100, mycn_status=NA, symptoms=[], **FAV), "low"),
    ("V2-14", dict(inrgss_stage="MS", age_days=100, mycn_status=NA, symptoms=["coagulopathy"], **FAV), "intermediate"),
    ("V2-15", dict(inrgss_stage="MS", age_days=400, mycn_status=NA, symptoms=["respiratory_distress"], **FAV),
     "intermediate"),
    ("V2-16", dict(inrgss_stage="MS", age_days=400, mycn_status=NA, **{**FAV, "ploidy": "diploid"}), "high"),
    ("V2-17", dict(inrgss_stage="MS", age_days=100, mycn_status=AMP), "high"),
]


@pytest.mark.parametrize("row, facts, expected", V2_ROWS, ids=[r[0] for r in V2_ROWS])
def test_cog_v2_table(engine: RuleEngine, row: str, facts: dict, expected: str) -> None:
    r = engine.evaluate(facts)
    assert r.outputs["cog_risk"] == expected
    assert [f.rule for f in r.fired if f.decision == "cog-risk"] == [row]


# --- COG version 1 (INSS era), criteria.md §6.1 --------------------------------------------
# Two editions (§6.1, "Editions"): A3961/P9641 (365 days the only age cut) and the 2006
# revision used by ANBL0531/ANBL0532 (the default).  Cells on which they agree are checked
# under both; each disputed cell is checked on both sides.

V1_ROWS = [
    ("v1-1", dict(inss_stage="1", age_days=6000), "low"),
    ("v1-2", dict(inss_stage="2A", age_days=200, mycn_status=NA), "low"),
    ("v1-3", dict(inss_stage="2B", age_days=800, mycn_status=NA), "low"),
    ("v1-5", dict(inss_stage="2B", age_days=800, mycn_status=AMP, inpc_histology=UH), "high"),
    ("v1-6", dict(inss_stage="3", age_days=200, mycn_status=NA), "intermediate"),
    ("v1-7", dict(inss_stage="3", age_days=200, mycn_status=AMP), "high"),
    ("v1-8", dict(inss_stage="3", age_days=800, mycn_status=NA, inpc_histology=FH), "intermediate"),
    ("v1-9", dict(inss_stage="3", age_days=800, mycn_status=NA, inpc_histology=UH), "high"),
    ("v1-10", dict(inss_stage="3", age_days=800, mycn_status=AMP), "high"),
    ("v1-11", dict(inss_stage="4", age_days=200, mycn_status=NA), "intermediate"),
    ("v1-13", dict(inss_stage="4", age_days=500, mycn_status=NA, inpc_histology=UH, ploidy="hyperdiploid"), "high"),
    ("v1-13", dict(inss_stage="4", age_days=500, mycn_status=NA, inpc_histology=FH, ploidy="diploid"), "high"),
    ("v1-14", dict(inss_stage="4", age_days=200, mycn_status=AMP), "high"),
    ("v1-15", dict(inss_stage="4", age_days=500, mycn_status=AMP), "high"),
    ("v1-16", dict(inss_stage="4", age_days=900), "high"),
    ("v1-17", dict(inss_stage="4S", age_days=100, mycn_status=NA, inpc_histology=FH, ploidy="hyperdiploid"), "low"),
    ("v1-18", dict(inss_stage="4S", age_days=100, mycn_status=NA, inpc_histology=FH, ploidy="diploid"), "intermediate"),
    ("v1-19", dict(inss_stage="4S", age_days=100, mycn_status=NA, inpc_histology=UH, ploidy="hyperdiploid"),
     "intermediate"),
    ("v1-20", dict(inss_stage="4S", age_days=100, mycn_status=AMP), "high"),
]

# (row, facts, A3961 edition, 2006/ANBL0531 edition)
V1_EDITION_CELLS = [
    # ANBL0532: "INSS stage 2a or 2b with MYCN amplification, regardless of age or additional biologic features"
    ("v1-2", dict(inss_stage="2A", age_days=200, mycn_status=AMP, inpc_histology=FH), "low", "high"),
    ("v1-4", dict(inss_stage="2A", age_days=800, mycn_status=AMP, inpc_histology=FH), "low", "high"),
    # Bender 2023: "In 2006, COG reclassified patients 365 to 546 days old with INSS stage 3, MYCN-NA, and unfavorable"
    ("v1-9", dict(inss_stage="3", age_days=365, mycn_status=NA, inpc_histology=UH), "high", "intermediate"),
    ("v1-9", dict(inss_stage="3", age_days=400, mycn_status=NA, inpc_histology=UH), "high", "intermediate"),
    ("v1-9", dict(inss_stage="3", age_days=547, mycn_status=NA, inpc_histology=UH), "high", "intermediate"),
    # ANBL0531: stage 4 aged 12 to 18 months with favourable biology added to intermediate risk
    ("v1-12", dict(inss_stage="4", age_days=365, mycn_status=NA, inpc_histology=FH, ploidy="hyperdiploid"),
     "high", "intermediate"),
    ("v1-12", dict(inss_stage="4", age_days=500, mycn_status=NA, inpc_histology=FH, ploidy="hypodiploid"),
     "high", "intermediate"),
]


@pytest.fixture(scope="module")
def a3961_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuleEngine]:
    rules = tmp_path_factory.mktemp("a3961") / "rules"
    shutil.copytree(REPO / "rules", rules)
    path = rules / "risk" / "cog-v1-risk.yaml"
    text = path.read_text()
    swap = {"    value: anbl0531": "    value: a3961", "      - value: a3961": "      - value: anbl0531",
            "status: active": "status: draft"}
    for before, after in swap.items():
        assert text.count(before) == 1
        text = text.replace(before, after)
    # the file's cases are written for its default edition, so the edited copy runs as a pinned draft
    path.write_text(text)
    version = next(line.split()[1] for line in text.splitlines() if line.startswith("version:"))
    with RuleEngine.from_directory(rules, use=[f"cog-v1-risk@{version}"]) as eng:
        yield eng


@pytest.mark.parametrize("row, facts, expected", V1_ROWS, ids=[r[0] for r in V1_ROWS])
def test_cog_v1_table_in_both_editions(engine: RuleEngine, a3961_engine: RuleEngine, row: str, facts: dict,
                                       expected: str) -> None:
    assert out(engine, "cog_v1_risk", **facts) == expected
    assert out(a3961_engine, "cog_v1_risk", **facts) == expected


@pytest.mark.parametrize("row, facts, a3961, anbl0531", V1_EDITION_CELLS,
                         ids=[f"{r[0]}-{r[1]['age_days']}d" for r in V1_EDITION_CELLS])
def test_cog_v1_cells_the_editions_disagree_on(engine: RuleEngine, a3961_engine: RuleEngine, row: str, facts: dict,
                                               a3961: str, anbl0531: str) -> None:
    assert out(engine, "cog_v1_risk", **facts) == anbl0531  # the default edition
    assert out(a3961_engine, "cog_v1_risk", **facts) == a3961


def test_v1_ages_547_and_548_for_stage_4(engine: RuleEngine) -> None:
    base = dict(inss_stage="4", mycn_status=NA, inpc_histology=FH, ploidy="hyperdiploid")
    assert out(engine, "cog_v1_risk", age_days=547, **base) == "intermediate"  # "< 548 d" (§0.1)
    assert out(engine, "cog_v1_risk", age_days=548, **base) == "high"


# --- INRG and COG disagree, criteria.md §6.3 ---------------------------------------------

DISCORDANT = [
    ("L1 amplified, resected", dict(inrgss_stage="L1", histology_category="neuroblastoma", mycn_status=AMP,
                                    resection_extent="complete", age_days=900), ("K", "high", "low")),
    ("L2 >= 18 mo, differentiating, intermediate MKI", dict(
        inrgss_stage="L2", age_days=900, histology_category="neuroblastoma", differentiation_grade="differentiating",
        mki="intermediate", mycn_status=NA, chr11q_status="normal"), ("E", "low", "high")),
    ("L2 >= 18 mo, GNB intermixed", dict(inrgss_stage="L2", age_days=900,
                                         histology_category="ganglioneuroblastoma_intermixed", mycn_status=NA),
     ("A", "very_low", "intermediate")),
    ("L2 < 18 mo, 11q aberration", dict(inrgss_stage="L2", age_days=300, histology_category="neuroblastoma",
                                        mycn_status=NA, chr11q_status="aberrant"), ("G", "intermediate", "intermediate")),
    ("M < 12 mo hyperdiploid with 11q loss", dict(inrgss_stage="M", age_days=200, mycn_status=NA, ploidy="hyperdiploid",
                                                  chr11q_status="aberrant"), ("F", "low", "intermediate")),
    ("M 12-18 mo hyperdiploid FH with 1p loss", dict(inrgss_stage="M", age_days=400, mycn_status=NA,
                                                     ploidy="hyperdiploid", inpc_histology=FH, chr11q_status="normal",
                                                     chr1p_status="aberrant"), ("F", "low", "high")),
    ("M 12-18 mo diploid", dict(inrgss_stage="M", age_days=400, mycn_status=NA, ploidy="diploid"),
     ("J", "intermediate", "high")),
    ("MS < 12 mo with 11q loss", dict(inrgss_stage="MS", age_days=200, mycn_status=NA, chr11q_status="aberrant"),
     ("Q", "high", "intermediate")),
    ("MS 12-18 mo, 11q normal, 1p loss", dict(inrgss_stage="MS", age_days=400, mycn_status=NA, chr11q_status="normal",
                                              chr1p_status="aberrant"), ("C", "very_low", "high")),
    ("MS < 12 mo symptomatic, all favourable", dict(inrgss_stage="MS", age_days=200, mycn_status=NA,
                                                    symptoms=["respiratory_distress"], **FAV),
     ("C", "very_low", "intermediate")),
]


@pytest.mark.parametrize("name, facts, expected", DISCORDANT, ids=[d[0] for d in DISCORDANT])
def test_inrg_and_cog_discordances(engine: RuleEngine, name: str, facts: dict, expected: tuple) -> None:
    r = engine.evaluate(facts)
    assert (r.outputs["inrg_group"], r.outputs["inrg_risk"], r.outputs["cog_risk"]) == expected
