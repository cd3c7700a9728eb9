"""The evaluation path nbrules takes, for running under valgrind.

Modes:
  nbrules  (default) matched, unmatched and indeterminate patients, rule reloads;
  control  durable-rules used naively: a session that ran no action is deleted,
           the bug the adapter's catch-all rule prevents.  It must be flagged.
"""

from __future__ import annotations

import sys


def nbrules_workload(rounds: int) -> None:
    from nbrules import RuleEngine

    patients = [
        {"age_days": 183, "primary_idrfs": [], "metastatic_sites": ["liver", "skin"], "mibg_bone_or_marrow_avid": False},
        {"age_days": 900, "metastatic_sites": ["bone"]},                        # matched by several rules
        {"age_days": 300, "primary_idrfs": [], "metastatic_sites": []},          # L1
        {"age_days": 300, "metastatic_sites": ["liver"]},                        # indeterminate: runs the analysis
        {},                                                                      # nothing known
        {"mycn_status": "amplified", "inss_stage": "1"},                         # no rule of staging applies
    ]
    for _ in range(rounds):
        engine = RuleEngine.default()
        for p in patients:
            engine.evaluate(p)
        engine.close()  # reload: the old rulesets are freed


def control_workload() -> None:
    from durable.engine import Host  # the control deliberately bypasses nbrules.backend

    class QuietHost(Host):  # type: ignore[misc]
        def _run(self) -> None:
            return None

    host = QuietHost()
    host.register_rulesets({"control": {"a": {"all": [{"m": {"x": 1}}], "run": lambda c: None}}})
    for i in range(3):
        try:
            host.assert_fact("control", {"sid": str(i), "x": 2})  # matches nothing: no action runs
        except Exception:
            pass
        host.delete_state("control", str(i))


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "nbrules"
    if mode == "control":
        control_workload()
    else:
        nbrules_workload(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    print(f"workload {mode} finished")
