"""torch.compile on a bounded set of shapes: same outputs as the eager model, batches cut back exactly."""

import pytest
import torch

from bertkit import build_model
from bertkit.model.compiled import ShapeStable
from conftest import random_batch


@pytest.mark.parametrize("task", ["encoder", "sequence_classification", "question_answering"])
def test_shape_stable_matches_eager_and_cuts_back(tiny_config, task):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(unpad=True), task, 3).eval()
    stable = ShapeStable(model, batch_size=4, bucket=16)
    # 3 rows of 10 tokens and 6 rows of 13 (two chunks, the second of 2 rows): all padded to (4, 16)
    for B, T, seed in [(3, 10, 0), (6, 13, 1)]:
        ids, mask, types = random_batch(tiny_config.vocab_size, B=B, T=T, seed=seed)
        with torch.no_grad():
            got, want = stable(ids, mask, types), model(ids, mask, types)
        if task == "encoder":
            pairs = [(got.hidden, want.hidden), (got.pooled, want.pooled)]
        else:
            pairs = list(zip(got, want)) if isinstance(want, tuple) else [(got, want)]
        for g, w in pairs:
            assert g.shape == w.shape, (task, g.shape, w.shape)
            if g.dim() == 3:  # per-token vectors: padding positions feed nothing
                g, w = g[mask.bool()], w[mask.bool()]
            elif task == "question_answering":
                g, w = g.masked_fill(~mask.bool(), 0), w.masked_fill(~mask.bool(), 0)
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    assert model.config.unpad  # the caller's model keeps its settings
