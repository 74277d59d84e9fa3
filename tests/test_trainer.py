"""The training loop's own rules, on a scripted task: best model kept, early stopping."""

import json

import torch

from bertkit import BertConfig, build_model, load_model
from bertkit.trainer import Step, TrainConfig, train


class ScriptedTask:
    """Random batches; evaluation returns the next scripted score and remembers the weights it saw."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def steps(self, state, rank, world):
        g = torch.Generator().manual_seed(0)
        while True:
            ids = torch.randint(5, 50, (4, 8), generator=g)
            yield Step([{"input_ids": ids, "labels": torch.randint(0, 2, (4,), generator=g)}], 32, {})

    def loss(self, model, micro):
        logits = model(micro["input_ids"])
        return torch.nn.functional.cross_entropy(logits, micro["labels"]), {}

    def evaluate(self, model):
        self.seen.append(model.classifier.weight.detach().clone())
        return {"accuracy": self.scores[len(self.seen) - 1]}


def test_best_model_is_kept_and_patience_stops(tmp_path):
    torch.manual_seed(0)
    model = build_model(BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2), "sequence_classification")
    task = ScriptedTask([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    cfg = TrainConfig(lr=1e-2, max_steps=60, eval_every=5, save_every=5, log_every=5, best_metric="accuracy",
                      patience=2)
    train(model, task, cfg, tmp_path, progress_bar=False)
    assert len(task.seen) == 4  # 0.6 and 0.65 do not beat 0.7: stopped after the fourth evaluation
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "early_stop" in r] == [20]
    kept = load_model(tmp_path / "model").model.classifier.weight
    assert torch.equal(kept, task.seen[1])  # the model of the 0.7 evaluation, not the last one
