"""Evaluation: metrics as pure functions of gold labels and predictions."""

from bertkit.encoding.bio import bio_decode, bio_entities, orphan_inside_tags
from bertkit.evaluate.metrics import (
    classification_metrics,
    entity_metrics,
    expected_calibration_error,
    multilabel_metrics,
    plot_confusion,
    regression_metrics,
    squad_metrics,
    squad_normalize,
)

__all__ = [
    "classification_metrics", "multilabel_metrics", "regression_metrics", "expected_calibration_error",
    "bio_decode", "bio_entities", "entity_metrics", "orphan_inside_tags", "squad_normalize", "squad_metrics",
    "plot_confusion",
]
