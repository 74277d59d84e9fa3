"""Robustness and bias: adversarial attacks on classifiers, character noise, invariance tests, stereotype scores.

Layout: pieces.py (a text as words and gaps), noise.py (typos and character edits; also fine-tuning's
`--augment-noise`), mlm.py (a masked LM's fillers and pseudo-log-likelihoods), attacks.py (charnoise, deepwordbug,
bae: `attack`, `attack_file`), bias.py (invariance tests, CrowS-style scores: `bias`), report.py (JSON, Markdown,
HTML, PNG), data/ (substitution lists, templates, minimal pairs written for bertkit).
"""

from bertkit.robust.attacks import RECIPES, AttackConfig, AttackRun, attack, attack_file
from bertkit.robust.bias import bias
from bertkit.robust.report import write_bias_report

__all__ = ["RECIPES", "AttackConfig", "AttackRun", "attack", "attack_file", "bias", "write_bias_report"]
