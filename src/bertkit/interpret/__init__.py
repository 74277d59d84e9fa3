"""Explain and inspect classification models: attributions, perturbations, attention, faithfulness scores.

Layout: words.py (sub-token -> word scores, words masked), scoring.py (the explained output),
attributions.py (integrated gradients, gradient x input, saliency), perturbation.py (occlusion, LIME),
attention.py (maps, rollout), faithfulness.py (deletion/insertion AOPC), explain.py (all of them on one input or a
data set), report.py (HTML and PNG).
"""

from bertkit.interpret.explain import METHODS, Explanation, evaluate, evaluate_file, explain, format_table

__all__ = ["METHODS", "Explanation", "evaluate", "evaluate_file", "explain", "format_table"]
