"""The robustness and bias audit: adversarial attacks on classifiers, invariance tests, stereotype scores.

Layout: mlm.py (a masked LM's fillers and pseudo-log-likelihoods), attacks.py (charnoise, deepwordbug, bae:
`attack`, `attack_file`), bias.py (invariance tests, CrowS-style scores: `bias`), report.py (JSON, Markdown, HTML,
PNG), data/ (substitution lists, templates, minimal pairs written for bertkit). The text perturbations it shares
with fine-tuning's noise augmentation are bertkit.data.noise and bertkit.data.pieces; the training defences
(adversarial training) are bertkit.adversarial.
"""

from bertkit.robust.attacks import RECIPES, AttackConfig, AttackRun, attack, attack_file
from bertkit.robust.bias import bias
from bertkit.robust.report import write_bias_report

__all__ = ["RECIPES", "AttackConfig", "AttackRun", "attack", "attack_file", "bias", "write_bias_report"]
