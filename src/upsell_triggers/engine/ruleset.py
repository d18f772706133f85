"""The rule set's public names, from the modules that own them: the model (rulemodel.py), the compiler
(rulecompiler.py) and the hot-path index with the RuleSet itself (ruleindex.py). Callers outside the
engine import from here.
"""

from __future__ import annotations

from upsell_triggers.engine.rulecompiler import PLACEHOLDERS, compile_sources, load_ruleset
from upsell_triggers.engine.ruleindex import LevelGroup, RuleSet
from upsell_triggers.engine.rulemodel import PAYWALL_METRIC, Plan, Policy, Problem, Rule, RulesError

__all__ = [
    "PAYWALL_METRIC",
    "PLACEHOLDERS",
    "LevelGroup",
    "Plan",
    "Policy",
    "Problem",
    "Rule",
    "RuleSet",
    "RulesError",
    "compile_sources",
    "load_ruleset",
]
