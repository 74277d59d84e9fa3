"""A bertkit model directory is a Hugging Face folder: `transformers` loads every head bertkit saves (by save_model
and by a fine-tuning run) with no missing or unexpected weight, the right labels and problem type, the same
tokenizer, and the same outputs on real tokens (fp32, 1e-5)."""

import random

import pytest
import torch
import transformers

from bertkit import BertConfig, Tokenizer, build_model, load_model, save_model
from bertkit.cli import main
from bertkit.convert import TASK_TO_ARCH
from test_parity import outputs_bertkit, outputs_hf

TOL = 1e-5
AUTO = {
    "encoder": transformers.AutoModel,
    "pretraining": transformers.BertForPreTraining,
    "masked_lm": transformers.AutoModelForMaskedLM,
    "sequence_classification": transformers.AutoModelForSequenceClassification,
    "token_classification": transformers.AutoModelForTokenClassification,
    "question_answering": transformers.AutoModelForQuestionAnswering,
}
WORDS = ["good", "bad", "film", "plot", "great", "dull", "story", "actor", "fine", "poor", "the", "a", "was",
         "Alice", "Paris", "and", "with", "really"]
TEXTS = ["the film was great", "a dull plot", "Alice was really fine in Paris", "poor story"]
PAIRS = ["good", "the actor was bad and the plot was dull", "a film", "great"]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=7)) for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(corpus(200), vocab_size=80, min_frequency=1, lowercase=False, show_progress=False)


def open_in_transformers(folder, task):
    """The folder through transformers' Auto class for its head; no weight may be missing, unexpected or resized."""
    theirs, info = AUTO[task].from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return theirs.eval()


def assert_same_outputs(ours, theirs, task, batch):
    """bertkit vs transformers on a padded batch with segment ids; per-token outputs compared on real tokens (with
    unpad, bertkit leaves padding positions at zero)."""
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    assert int((mask == 0).sum()) > 0 and int(types.sum()) > 0  # really padded, really two segments
    real = mask.bool()
    with torch.no_grad():
        for a, b in zip(outputs_bertkit(ours.eval(), ids, mask, types), outputs_hf(theirs, task, ids, mask, types)):
            assert a.shape == b.shape
            if a.dim() >= 2 and a.shape[:2] == real.shape:
                a, b = a[real], b[real]
            assert float((a - b).abs().max()) <= TOL, (task, float((a - b).abs().max()))


def hf_batch(folder, tok):
    """The test batch as transformers' AutoTokenizer makes it, checked against bertkit's tokenizer."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    enc = hf_tok(TEXTS, PAIRS, padding=True, return_tensors="pt")
    ours = tok.encode_batch(TEXTS, PAIRS)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert enc[key].tolist() == ours[key].tolist(), key
    return enc


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("task", list(AUTO))
def test_transformers_opens_every_head_save_model_writes(tmp_path, tiny_config, tok, task, unpad):
    torch.manual_seed(4)
    config = tiny_config.replace(unpad=unpad, vocab_size=tok.vocab_size + 3)
    model = build_model(config, task, 3).eval()
    labels = ["neg", "neu", "pos"] if task in ("sequence_classification", "token_classification") else None
    save_model(tmp_path / "m", model, tok, labels=labels)
    theirs = open_in_transformers(tmp_path / "m", task)
    assert type(theirs).__name__ == TASK_TO_ARCH[task]
    if labels:
        assert theirs.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
        assert theirs.config.label2id == {"neg": 0, "neu": 1, "pos": 2}
    assert_same_outputs(model, theirs, task, hf_batch(tmp_path / "m", tok))


@pytest.mark.parametrize("problem, hf_problem, n", [("single_label", "single_label_classification", 3),
                                                    ("multi_label", "multi_label_classification", 3),
                                                    ("regression", "regression", 1)])
def test_sequence_classifier_problem_types(tmp_path, tiny_config, tok, problem, hf_problem, n):
    torch.manual_seed(5)
    model = build_model(tiny_config.replace(vocab_size=tok.vocab_size), "sequence_classification", n, problem)
    labels = ["sport", "politics", "science"] if n == 3 else None
    save_model(tmp_path / "m", model, tok, labels=labels)
    theirs = open_in_transformers(tmp_path / "m", "sequence_classification")
    assert theirs.config.problem_type == hf_problem and theirs.config.num_labels == n
    if labels:
        assert list(theirs.config.id2label.values()) == labels
    assert_same_outputs(model, theirs, "sequence_classification", hf_batch(tmp_path / "m", tok))
    back = load_model(tmp_path / "m")
    assert back.model.problem_type == problem and back.model.num_labels == n


@pytest.fixture(scope="module")
def run_data(tmp_path_factory, tok):
    d = tmp_path_factory.mktemp("runs")
    rng = random.Random(1)
    rows = ["text,label"]
    for i in range(64):
        words = corpus(1, seed=i)[0].split()
        rows.append(" ".join(words + [rng.choice(["great", "fine"] if i % 2 else ["dull", "poor"])]) + ","
                    + ("pos" if i % 2 else "neg"))
    (d / "cls.csv").write_text("\n".join(rows) + "\n")
    sentences = []
    for i in range(48):
        tokens = corpus(1, seed=100 + i)[0].split()
        sentences.append("\n".join(f"{t} {'B-PER' if t == 'Alice' else 'B-LOC' if t == 'Paris' else 'O'}"
                                   for t in tokens))
    (d / "ner.conll").write_text("\n\n".join(sentences) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                        max_position_embeddings=64)
    save_model(d / "base", build_model(config, "encoder"), tok)
    return d


@pytest.mark.parametrize("recipe, task", [("classification", "sequence_classification"),
                                          ("ner", "token_classification")])
def test_transformers_opens_a_fine_tuned_run(run_data, tmp_path, tok, recipe, task, capsys):
    data = run_data / ("cls.csv" if recipe == "classification" else "ner.conll")
    out = tmp_path / "run"
    assert main(["finetune", str(run_data / "base"), "--task", recipe, "--train", str(data), "--dev", str(data),
                 "--out", str(out), "--epochs", "1", "--batch-size", "16", "-q"]) == 0
    ours = load_model(out / "model")
    assert ours.model.config.unpad  # what fine-tuning saves, and transformers must not be thrown by
    theirs = open_in_transformers(out / "model", task)
    names = list(theirs.config.id2label.values())
    assert names == ours.labels  # the real names, not LABEL_i
    assert names == ["neg", "pos"] if recipe == "classification" else {"O", "B-PER", "B-LOC"} <= set(names)
    assert_same_outputs(ours.model, theirs, task, hf_batch(out / "model", tok))
    assert "library_name: bertkit" in (out / "model" / "README.md").read_text()
