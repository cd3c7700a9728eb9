"""The bundled decisions written by hand as plain Python if/else: the benchmark's baseline.

Not part of the product.  Default parameters, complete patients only (a hand-written
if/else has no answer for missing facts; that is what the product adds).  The
benchmark checks that these functions agree with the engine on every patient it uses.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

MS_SITES = {"skin", "liver", "bone_marrow"}
SYMPTOMS = {"respiratory_distress", "spinal_cord_compression", "ivc_compression_renal_ischemia",
            "genitourinary_obstruction", "gastrointestinal_obstruction", "coagulopathy"}


def inrgss(p: dict[str, Any]) -> tuple[str, list[str]]:
    sites = set(p["metastatic_sites"])
    if not sites:
        return ("L1", ["L1"]) if not p["primary_idrfs"] else ("L2", ["L2"])
    age, mibg = p["age_days"], p["mibg_bone_or_marrow_avid"]
    pct = p.get("bone_marrow_tumor_percent", 0)
    fired = []
    if sites - MS_SITES:
        fired.append("M-site")
    if age >= 547:
        fired.append("M-age")
    if "bone_marrow" in sites and pct >= 10:
        fired.append("M-marrow")
    if mibg:
        fired.append("M-mibg")
    return ("M", fired) if fired else ("MS", ["MS"])


def inpc(p: dict[str, Any]) -> tuple[str, str]:
    cat, age = p["histology_category"], p["age_days"]
    if cat == "ganglioneuroblastoma_intermixed":
        return "favorable", "GNBi-FH"
    if cat == "ganglioneuroma_maturing":
        return "favorable", "GN-maturing-FH"
    if cat == "ganglioneuroma_mature":
        return "favorable", "GN-mature-FH"
    grade, mki = p["differentiation_grade"], p["mki"]
    if age < 547:
        if grade == "undifferentiated" or mki == "high":
            return "unfavorable", "NB-under-18mo-UH"
        return "favorable", "NB-under-18mo-FH"
    if age < 1826:
        if grade == "differentiating" and mki == "low":
            return "favorable", "NB-18mo-to-5y-FH"
        return "unfavorable", "NB-18mo-to-5y-UH"
    return "unfavorable", "NB-5y-UH"


def inrg(p: dict[str, Any], stage: str) -> tuple[str, str, str] | None:
    age, cat, amp = p["age_days"], p["histology_category"], p["mycn_status"] == "amplified"
    q11 = p["chr11q_status"] == "aberrant"
    if stage in ("L1", "L2"):
        if cat == "ganglioneuroma_mature":
            return None
        if cat in ("ganglioneuroma_maturing", "ganglioneuroblastoma_intermixed"):
            return "A", "very_low", "A"
        if stage == "L1":
            return ("K", "high", "K") if amp else ("B", "very_low", "B")
        if amp:
            return "N", "high", "N"
        if age < 547:
            return ("G", "intermediate", "G") if q11 else ("D", "low", "D")
        if p["differentiation_grade"] == "differentiating":
            return ("H", "intermediate", "H-a") if q11 else ("E", "low", "E")
        return "H", "intermediate", "H-b"
    if stage == "M":
        if age >= 547:
            return "P", "high", "P"
        if amp:
            return "O", "high", "O"
        if p["ploidy"] == "hyperdiploid":
            return "F", "low", "F"
        return ("I", "intermediate", "I") if age < 365 else ("J", "intermediate", "J")
    if age >= 547:
        return None
    if amp:
        return "R", "high", "R"
    return ("Q", "high", "Q") if q11 else ("C", "very_low", "C")


def cog_v2(p: dict[str, Any], stage: str, uh: bool) -> tuple[str, str] | None:
    age, amp = p["age_days"], p["mycn_status"] == "amplified"
    sca = p["chr11q_status"] == "aberrant" or p["chr1p_status"] == "aberrant"
    diploid = p["ploidy"] == "diploid"
    if stage == "L1":
        if not amp:
            return "low", "V2-1"
        return ("low", "V2-2") if p["resection_extent"] == "complete" else ("high", "V2-3")
    if stage == "L2":
        if amp:
            return "high", "V2-7"
        if age < 547:
            return "intermediate", "V2-4"
        return ("high", "V2-6") if uh else ("intermediate", "V2-5")
    unfavorable = uh or sca or diploid
    if stage == "M":
        if age >= 547:
            return "high", "V2-12"
        if amp:
            return "high", "V2-11"
        if age < 365:
            return "intermediate", "V2-8"
        return ("high", "V2-10") if unfavorable else ("intermediate", "V2-9")
    if age >= 547:
        return None
    if amp:
        return "high", "V2-17"
    if age < 365:
        symptoms = set(p["symptoms"])
        symptomatic = bool(symptoms & SYMPTOMS) or ("evolving_hepatomegaly" in symptoms and age < 90)
        return ("intermediate", "V2-14") if symptomatic or unfavorable else ("low", "V2-13")
    return ("high", "V2-16") if unfavorable else ("intermediate", "V2-15")


def cog_v1(p: dict[str, Any], uh: bool) -> tuple[str, str]:
    inss, age, amp = p["inss_stage"], p["age_days"], p["mycn_status"] == "amplified"
    favorable_ploidy = p["ploidy"] != "diploid"
    if inss == "1":
        return "low", "v1-1"
    if inss in ("2A", "2B"):  # the 2006 (ANBL0531/ANBL0532) edition, the default
        if amp:
            return "high", "v1-2AB-amplified"
        return ("low", "v1-2") if age < 365 else ("low", "v1-3")
    if inss == "3":
        if age < 365:
            return ("high", "v1-7") if amp else ("intermediate", "v1-6")
        if amp:
            return "high", "v1-10"
        if uh:
            return ("intermediate", "v1-9-toddler") if age < 548 else ("high", "v1-9")
        return "intermediate", "v1-8"
    if inss == "4":
        if age >= 548:
            return "high", "v1-16"
        if age < 365:
            return ("high", "v1-14") if amp else ("intermediate", "v1-11")
        if amp:
            return "high", "v1-15"
        return ("intermediate", "v1-12") if not uh and favorable_ploidy else ("high", "v1-13")
    if amp:
        return "high", "v1-20"
    return ("low", "v1-17") if not uh and favorable_ploidy else ("intermediate", "v1-18-19")


def decide(p: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Outputs and the (decision, rule) pairs that fired."""
    fired: list[tuple[str, str]] = []
    stage, rules = inrgss(p)
    fired += [("inrgss", r) for r in rules]
    group = inrg(p, stage)
    if group:
        fired.append(("inrg", group[2]))
    histology, rule = inpc(p)
    fired.append(("inpc", rule))
    uh = histology == "unfavorable"
    cog = cog_v2(p, stage, uh)
    if cog:
        fired.append(("cog-risk", cog[1]))
    v1 = cog_v1(p, uh)
    fired.append(("cog-v1-risk", v1[1]))
    outputs = {"inrgss_stage": stage, "inrg_group": group[0] if group else None,
               "inrg_risk": group[1] if group else None, "mki": p["mki"] if "mki" in p else None,
               "inss_stage": p["inss_stage"], "inpc_histology": histology, "cog_risk": cog[0] if cog else None,
               "cog_v1_risk": v1[0]}
    return outputs, fired


# --- the same job as the product's batch: parse strictly, validate, check the input
# constraints, canonicalise and hash the input, decide, write the same result document ---

SPECS: dict[str, Any] = {}  # fact -> (kind, allowed values), filled by the benchmark
ORDER: dict[str, dict[str, int]] = {}  # fact -> value-set order (sets) or {} (others), in facts.yaml order


class Refused(ValueError):
    """A row the baseline does not evaluate (bad JSON, schema, an input constraint)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise Refused(f"duplicate key {k}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise Refused(f"{name} is not JSON")


def parse(line: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN or Infinity."""
    return json.loads(line, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def validate(p: Any) -> bool:
    """Hand-written checks of the patient schema (types, value sets, ranges)."""
    if type(p) is not dict:
        return False
    for k, v in p.items():
        spec = SPECS.get(k)
        if spec is None:
            return False
        kind, allowed = spec
        if kind == "enum" and not (type(v) is str and v in allowed):
            return False
        if kind == "set" and not (type(v) is list and all(type(x) is str and x in allowed for x in v)
                                  and len(set(v)) == len(v)):
            return False
        if kind == "int" and not ((type(v) is int or (type(v) is float and v.is_integer())) and 0 <= v <= 36525):
            return False
        if kind == "num" and not (type(v) in (int, float) and math.isfinite(v) and 0 <= v <= 100):
            return False
        if kind == "bool" and type(v) is not bool:
            return False
    return True


MKI_NOT_APPLICABLE = ("needs mki_count, which does not apply to this patient "
                      "(input constraint mki-count-only-for-neuroblastoma)")
NOT_NB = {"ganglioneuroblastoma_intermixed", "ganglioneuroma_maturing", "ganglioneuroma_mature"}


def constraints(p: dict[str, Any]) -> list[str]:
    """The package's input constraints (rules/constraints.yaml), by hand: raises
    :class:`Refused` for an error, returns the ids of the warnings that hold."""
    sites = p.get("metastatic_sites")
    pct = p.get("bone_marrow_tumor_percent")
    if pct is not None and pct > 0 and sites is not None and "bone_marrow" not in sites:
        raise Refused("marrow-percent-needs-marrow-site")
    if sites is not None and "bone_marrow" in sites and pct is not None and not pct > 0:
        raise Refused("marrow-site-needs-marrow-percent")
    if p.get("histology_category") in NOT_NB and ("differentiation_grade" in p or "mki" in p or "mki_count" in p):
        raise Refused("grade-or-mki-only-for-neuroblastoma")
    if p.get("inss_stage") == "4S" and "age_days" in p and not p["age_days"] < 365:
        raise Refused("inss-4s-infants-only")
    warnings = []
    if p.get("inss_stage") in ("4", "4S") and sites == []:
        warnings.append("inss-distant-needs-sites")
    if p.get("inss_stage") in ("1", "2A", "2B", "3") and sites:
        warnings.append("inss-local-no-sites")
    if p.get("mibg_bone_or_marrow_avid") is True and sites == []:
        warnings.append("mibg-uptake-needs-sites")
    return warnings


def canonical(p: dict[str, Any]) -> dict[str, Any]:
    """Facts in facts.yaml order, lists in value-set order, whole numbers as int."""
    out: dict[str, Any] = {}
    for name, order in ORDER.items():
        if name in p:
            v = p[name]
            if order:
                v = sorted(v, key=order.__getitem__)
            elif type(v) is float and v.is_integer():
                v = int(v)
            out[name] = v
    return out


def document(p: dict[str, Any], meta: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The result document with its trace, byte for byte as the product's batch writes it
    (the benchmark checks that)."""
    outputs, fired = decide(p)
    const = meta[("", "")]
    canonical_text = json.dumps(p, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    seen = {**p, **outputs}
    trace = []
    for order, key in enumerate(fired, start=1):
        m = meta[key]
        trace.append({"order": order, "decision": key[0], "version": m["version"], "rule": key[1],
                      "source": m["source"], "cite": m["cite"], "matched": {f: seen.get(f) for f in m["facts"]},
                      "set": m["set"], **({"parameters": m["parameters"]} if m["parameters"] else {})})
    from_input = {"inss_stage": {"decision": "inss", "value": p["inss_stage"]}}
    not_applicable = {}
    if "mki" in p:
        from_input["mki"] = {"decision": "mki-class", "value": p["mki"]}
    else:
        outputs["mki"] = None
        not_applicable["mki"] = {"decision": "mki-class", "reason": MKI_NOT_APPLICABLE}
    ordered = {k: outputs[k] for k in ("inrgss_stage", "inrg_group", "inrg_risk", "inss_stage", "mki",
                                       "inpc_histology", "cog_risk", "cog_v1_risk")}
    doc = {"type": "nbrules.result", "outputs": ordered, "indeterminate": {}, "not_applicable": not_applicable,
           "settled": {}, "from_input": from_input, "fired": trace, "warnings": [],
           "rulesets": const["rulesets"], "knowledge": const["knowledge"], "input": p,
           "input_sha256": hashlib.sha256(canonical_text.encode()).hexdigest(), "as_of": const["as_of"],
           "engine": "baseline"}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
