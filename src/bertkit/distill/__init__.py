"""Distillation: a fine-tuned teacher (a text classifier or an NER tagger) teaches a smaller student, on the one
training loop (trainer.py), and a report says what the student keeps and what it gains (docs/distillation.md).

    from bertkit.distill import DistillConfig, distill
    distill("runs/teacher/model", "runs/student", DistillConfig(student="teacher", student_layers=3),
            {"lr": 1e-4}, "train.csv", "dev.csv", "test.csv")

    student.py  the student (from the teacher's layers, a preset or a folder) and `Distiller`, the module trained
    task.py     DistillConfig, the trainer's DistillTask (batches and losses), the teacher's cached logits
    recipe.py   distill(): checks, augmentation, training, the control run, scores
    report.py   teacher vs student: scores, agreement, size, throughput (report.json, report.md)
"""

from bertkit.distill.recipe import distill
from bertkit.distill.task import DistillConfig

__all__ = ["distill", "DistillConfig"]
