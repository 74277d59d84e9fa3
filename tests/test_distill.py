"""Distillation on tiny models: the losses by hand, layer copying, unpadded hidden states, a student that follows its
teacher more than the labels, the cached teacher, augmentation, exact resume, the report, bad input."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, load_model, pipeline, save_model
from bertkit.cli import main
from bertkit.data.augment import augment_texts
from bertkit.distill import DistillConfig, distill
from bertkit.distill.student import layer_map, make_student
from bertkit.errors import BertkitError
from bertkit.evaluate.runner import evaluate_file
from bertkit.finetune import FinetuneConfig, finetune
from bertkit.objectives import attention_loss, soft_target_loss

from test_finetune import BAD, FILLER, GOOD, NAMES, PLACES, review, write_csv

FUN = ["funny", "hilarious", "witty"]
FLIPPED = ("moving", "brilliant", "delightful")
"""Words whose reviews the distillation data labels neg, though the teacher learned them as pos."""


def tagged_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    tokens, tags = [], []
    for _ in range(rng.randint(3, 8)):
        r = rng.random()
        if r < 0.2:
            tokens, tags = tokens + [rng.choice(NAMES), "Smith"], tags + ["B-PER", "I-PER"]
        elif r < 0.35:
            tokens, tags = tokens + [rng.choice(PLACES)], tags + ["B-LOC"]
        else:
            tokens, tags = tokens + [rng.choice(FILLER)], tags + ["O"]
    return tokens, tags


def multi_label_row(rng: random.Random) -> dict:
    words, labels = rng.sample(FILLER, 4), []
    if rng.random() < 0.5:
        words, labels = words + [rng.choice(GOOD)], labels + ["good"]
    if rng.random() < 0.5:
        words, labels = words + [rng.choice(FUN)], labels + ["fun"]
    if not labels:
        words, labels = words + [rng.choice(BAD)], ["bad"]
    rng.shuffle(words)
    return {"text": " ".join(words), "pair": " ".join(rng.sample(FILLER, 2)), "label": labels}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Labelled files, a 4-layer encoder with its tokenizer, a random masked LM, and three teachers fine-tuned from
    the encoder: a sentiment classifier, a multi-label pair classifier and an NER tagger."""
    d = tmp_path_factory.mktemp("distill")
    rng = random.Random(0)
    files = {}
    for name, n in (("train", 320), ("dev", 60), ("test", 80)):
        rows = [(review(rng, i % 2 == 0), "pos" if i % 2 == 0 else "neg") for i in range(n)]
        files[name] = write_csv(d / f"{name}.csv", rows)
        # the same texts labelled by another rule: reviews with a FLIPPED word are neg
        files[f"flipped_{name}"] = write_csv(d / f"flipped_{name}.csv", [
            (t, "neg" if any(w in t.split() for w in FLIPPED) else y) for t, y in rows])
    for name, n in (("ml_train", 160), ("ml_dev", 40), ("ml_test", 40)):
        files[name] = d / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(multi_label_row(rng)) + "\n" for _ in range(n)))
    sentences = [tagged_sentence(rng) for _ in range(240)]
    for name, part in (("ner_train", sentences[:180]), ("ner_dev", sentences[180:210]),
                       ("ner_test", sentences[210:])):
        files[name] = d / f"{name}.conll"
        files[name].write_text("\n\n".join("\n".join(f"{t} {g}" for t, g in zip(*s)) for s in part) + "\n")
    texts = [line.split(",")[0] for line in files["train"].read_text().splitlines()[1:]]
    texts += [" ".join(s[0]) for s in sentences] + [" ".join(FUN)]
    tok = Tokenizer.train(texts, vocab_size=200, min_frequency=1, lowercase=False, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    files["base"] = save_model(d / "base", build_model(config, "encoder"), tok)
    files["mlm"] = save_model(d / "mlm", build_model(config, "masked_lm"), tok)
    train = {"lr": 3e-3}
    for name, task, problem, epochs, split in (("teacher", "classification", "single_label", 4, ""),
                                               ("ml_teacher", "classification", "multi_label", 6, "ml_"),
                                               ("ner_teacher", "ner", "single_label", 6, "ner_")):
        cfg = FinetuneConfig(task=task, problem_type=problem, batch_size=16, epochs=epochs)
        columns = {"pair_column": "pair"} if split == "ml_" else None
        finetune(files["base"], d / name, cfg, train, files[f"{split}train"], files[f"{split}dev"],
                 files[f"{split}test"], columns, progress=False)
        files[name] = d / name / "model"
    return files


def args(teacher, data, out, *extra, split=""):
    """A distill command line; without augmentation unless asked (its default, 4 variants a text, makes a masked
    LM in bertkit's cache)."""
    augment = [] if "--augment" in extra else ["--augment", "0"]
    return ["distill", str(teacher), "--train", str(data[f"{split}train"]), "--dev", str(data[f"{split}dev"]),
            "--test", str(data[f"{split}test"]), "--out", str(out), "--batch-size", "16", "--lr", "3e-3", "-q",
            *augment, *map(str, extra)]


def losses(run_dir, key="loss") -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in lines if key in r}


# ---- the losses, by hand -------------------------------------------------------------------------------------


def test_soft_target_loss_equals_a_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], requires_grad=True)
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    T = 2.0

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p_t, p_s = softmax(t.detach().numpy() / T), softmax(s.detach().numpy() / T)
    expected = T * T * float((p_t * (np.log(p_t) - np.log(p_s))).sum())
    loss = soft_target_loss(s, t, T)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert t.grad is None and s.grad is not None  # the teacher takes no gradient
    assert float(soft_target_loss(t, t, T).detach()) == pytest.approx(0.0, abs=1e-6)

    q = 1 / (1 + np.exp(-t.detach().numpy() / T))  # multi-label: BCE against sigmoid(teacher / T), times T^2
    r = 1 / (1 + np.exp(-s.detach().numpy() / T))
    expected = T * T * float(-(q * np.log(r) + (1 - q) * np.log(1 - r)).sum())
    assert float(soft_target_loss(s, t, T, "multi_label").detach()) == pytest.approx(expected, rel=1e-6)


def test_attention_loss_equals_a_hand_computation():
    teacher = torch.tensor([[[[0.7, 0.3, 0.0], [0.5, 0.5, 0.0], [0.2, 0.8, 0.0]]]])  # (1, 1, 3, 3), key 2 padded
    student = torch.tensor([[[[0.4, 0.6, 0.0], [0.5, 0.5, 0.0], [0.9, 0.1, 0.0]]]])
    queries = torch.tensor([[True, True, False]])
    expected = 0.7 * np.log(0.7 / 0.4) + 0.3 * np.log(0.3 / 0.6)  # query 1 agrees, query 2 is padding
    assert float(attention_loss(student, teacher, queries)) == pytest.approx(expected, rel=1e-6)
    two_heads = torch.cat([student, teacher], dim=1)  # (1, 2, 3, 3): compared with a one-head teacher on the mean
    mean = two_heads.mean(1, keepdim=True)
    assert float(attention_loss(two_heads, teacher, queries)) == pytest.approx(
        float(attention_loss(mean, teacher, queries)), rel=1e-6)


# ---- the student -----------------------------------------------------------------------------------------------


def test_a_student_copies_every_kth_teacher_layer():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32,
                        max_position_embeddings=32)
    teacher = build_model(config, "sequence_classification", 3)
    assert layer_map(2, 4) == [(0, 0), (1, 2), (2, 4)] and layer_map(3, 12) == [(0, 0), (1, 4), (2, 8), (3, 12)]
    student, init = make_student(teacher, "teacher", 2)
    assert student.config.num_layers == 2 and student.config.unpad and "layers [2, 4]" in init

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    assert same(student.bert.blocks[0], teacher.bert.blocks[1]) and same(student.bert.blocks[1], teacher.bert.blocks[3])
    assert not same(student.bert.blocks[0], teacher.bert.blocks[0])
    for part in ("embeddings", "pooler"):
        assert same(getattr(student.bert, part), getattr(teacher.bert, part))
    assert same(student.classifier, teacher.classifier)
    assert make_student(teacher, "teacher")[0].config.num_layers == 2  # half the teacher's by default
    wide, init = make_student(teacher, "tiny", 1)  # 128 wide: BERT's init
    assert wide.config.hidden_size == 128 and wide.config.vocab_size == 50 and init.startswith("fresh")
    with pytest.raises(BertkitError, match="at most 4"):
        make_student(teacher, "teacher", 5)

    # PKD's "last": the teacher's top layers
    assert layer_map(2, 6, "last") == [(0, 0), (1, 5), (2, 6)] and layer_map(3, 3, "last") == layer_map(3, 3)
    top, init = make_student(teacher, "teacher", 2, "last")
    assert same(top.bert.blocks[0], teacher.bert.blocks[2]) and same(top.bert.blocks[1], teacher.bert.blocks[3])
    assert "layers [3, 4]" in init


def test_the_defaults_depend_on_the_teachers_task():
    """Augmentation for classification, none for NER; the teacher's logits cached unless a loss needs its layers;
    given values win."""
    cfg = DistillConfig()
    assert (cfg.for_task("classification").augment, cfg.for_task("ner").augment) == (4, 0)
    assert cfg.for_task("ner").cache_teacher and not DistillConfig(hidden_weight=1.0).for_task("ner").cache_teacher
    assert DistillConfig(augment=2).for_task("classification").augment == 2
    assert DistillConfig(soft_weight=0.0).for_task("classification").augment == 0  # labels alone: nothing to teach
    with pytest.raises(BertkitError, match="NER augmentation is not supported"):
        DistillConfig(augment=1).for_task("ner")


def test_a_recipe_sets_its_options_and_given_ones_win():
    tiny = DistillConfig.from_recipe("tinybert", augment=0)
    assert (tiny.recipe, tiny.hidden_weight, tiny.attention_weight, tiny.intermediate_epochs, tiny.temperature,
            tiny.hard_weight, tiny.augment) == ("tinybert", 1.0, 1.0, 1.0, 1.0, 0.0, 0)
    assert DistillConfig.from_recipe("distilbert").hidden_weight == 1.0
    assert DistillConfig.from_recipe("minilm").attention_weight == 1.0
    assert DistillConfig.from_recipe() == DistillConfig()
    with pytest.raises(BertkitError, match="recipe must be one of"):
        DistillConfig.from_recipe("bigbert")


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_unpadded_hidden_states_and_attention_equal_the_padded_ones(backend):
    """Distillation reads hidden states and attention probabilities on the model's own unpadded path."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                        max_position_embeddings=32, attention_backend=backend, hidden_dropout=0.0,
                        attention_dropout=0.0)
    padded = build_model(config, "encoder").eval()
    unpadded = build_model(config.replace(unpad=True), "encoder").eval()
    unpadded.load_state_dict(padded.state_dict())
    ids = torch.randint(5, 50, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])
    with torch.no_grad():
        a, b = (m(ids, mask, output_hidden_states=True, output_attentions=True) for m in (padded, unpadded))
    real = mask.bool()
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x[real], y[real], atol=1e-5, rtol=0)
        assert float(y[~real].abs().max()) == 0.0  # zeros at padding, as the unpadded `hidden` is
    for x, y in zip(a.attentions, b.attentions):  # (B, H, T, T): the real queries' rows (padding's differ)
        torch.testing.assert_close(x.transpose(1, 2)[real], y.transpose(1, 2)[real], atol=1e-5, rtol=0)


# ---- end to end --------------------------------------------------------------------------------------------------


def test_a_distilled_student_follows_its_teacher_more_than_the_labels_do(data, tmp_path, capsys):
    """The teacher learned that reviews with "moving", "brilliant" or "delightful" are pos; the distillation data
    labels them neg. A student taught by the teacher alone (soft targets) keeps the teacher's view; the control,
    the same student trained on the labels alone with the same recipe, learns the labels'. Agreement with the
    teacher on the test texts tells them apart (seed 0; measured 1.0 against 0.80)."""
    out = tmp_path / "st"
    assert main(args(data["teacher"], data, out, "--student-layers", 2, "--hard-weight", 0, "--epochs", 4,
                     "--control", split="flipped_")) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    rows = {(r["model"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {(m, p) for m in ("teacher", "student", "control") for p in ("fp32", "int8")}
    assert rows["teacher", "fp32"]["agreement"] == 1.0
    assert rows["student", "fp32"]["agreement"] >= 0.95, report
    assert rows["student", "fp32"]["agreement"] > rows["control", "fp32"]["agreement"] + 0.1, report
    assert rows["student", "fp32"]["parameters"] < rows["teacher", "fp32"]["parameters"]
    assert report["ratios"]["speedup_fp32"] > 0 and "accuracy_gap" in report["ratios"]
    assert "| student | int8 |" in (out / "report.md").read_text()

    # the student is a plain model folder: it loads, and scores the run's own test file as the run did
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student_init"].startswith("copied from the teacher") and "control" in metrics
    evaluated = evaluate_file(out / "model", data["flipped_test"])
    assert evaluated["accuracy"] == metrics["test"]["accuracy"]
    assert evaluated["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert load_model(out / "model").model.config.num_layers == 2
    assert pipeline(out / "model")(["the plot was brilliant"])[0]["label"] == "pos"  # the teacher's view
    import transformers
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(str(out / "model"),
                                                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and hf.config.num_hidden_layers == 2
    assert "distilled from" in (out / "model" / "README.md").read_text()


def test_cached_teacher_gives_the_losses_of_the_teacher_run_each_step(data, tmp_path):
    """Multi-label pairs with augmented texts (teacher-labelled, no hard label): the teacher's logits computed once
    and read from the run folder give the losses of the run that calls the teacher every step."""
    cfg = DistillConfig(augment=2, augment_mlm=str(data["mlm"]), finetune=FinetuneConfig(batch_size=16, epochs=1))
    runs = {}
    for name, cache in (("live", False), ("cached", True)):
        runs[name] = distill(data["ml_teacher"], tmp_path / name, replace(cfg, cache_teacher=cache),
                             {"lr": 3e-3, "log_every": 1}, data["ml_train"], data["ml_dev"], data["ml_test"],
                             {"pair_column": "pair"}, progress=False)
    assert (tmp_path / "cached" / "teacher_logits.safetensors").is_file()
    assert not (tmp_path / "live" / "teacher_logits.safetensors").exists()
    assert runs["cached"]["augmented_examples"] == 2 * runs["cached"]["train_examples"]
    live, cached = losses(tmp_path / "live"), losses(tmp_path / "cached")
    assert sorted(live) == sorted(cached) and len(live) >= 20
    for step in live:
        assert cached[step] == pytest.approx(live[step], rel=1e-5, abs=1e-6), step
    assert losses(tmp_path / "live", "hard") and losses(tmp_path / "live", "soft")

    lines = [json.loads(x) for x in (tmp_path / "cached" / "augmented.jsonl").read_text().splitlines()]
    sources = [json.loads(x) for x in data["ml_train"].read_text().splitlines()]
    assert len(lines) == 2 * len(sources)
    assert all(x["text"] != sources[x["source"]]["text"] and x["pair"] == sources[x["source"]]["pair"]
               for x in lines)


def test_a_batch_of_augmented_texts_alone_trains_on_soft_targets(data, tmp_path):
    """Batches of 2 from a set 4/5 augmented: most hold no labelled row (collate then gives no labels), and their
    hard loss is 0 while the soft one trains."""
    cfg = DistillConfig(augment=4, augment_mlm=str(data["mlm"]), cache_teacher=True,
                        finetune=FinetuneConfig(batch_size=2, epochs=0.05))
    distill(data["teacher"], tmp_path / "st", cfg, {"lr": 3e-3, "log_every": 1}, data["train"], data["dev"],
            data["test"], progress=False)
    hard, soft = losses(tmp_path / "st", "hard"), losses(tmp_path / "st", "soft")
    assert len(hard) == len(soft) >= 20
    unlabelled = [step for step in hard if hard[step] == 0.0]
    assert len(unlabelled) >= 5 and all(soft[step] > 0 for step in unlabelled)


def test_augmentation_makes_n_variants_that_differ_from_their_source(data):
    loaded = load_model(data["mlm"])
    texts = [f"the plot was {w} and the cast quite {b}" for w, b in zip(GOOD, BAD)] + ["!!"]
    variants = augment_texts(texts, loaded.model, loaded.tokenizer, n=3, rate=0.25, seed=0)
    assert [v.source for v in variants] == [i for i in range(len(GOOD)) for _ in range(3)]  # "!!" has no word
    for v in variants:
        assert v.text != texts[v.source] and len(v.replaced) == 2  # round(0.25 x 8 words)
        assert all(old in texts[v.source].split() and new != old for old, new in v.replaced)
    again = augment_texts(texts, loaded.model, loaded.tokenizer, n=3, rate=0.25, seed=0)
    assert [v.text for v in again] == [v.text for v in variants]


def test_resume_continues_exactly(data, tmp_path, monkeypatch):
    """A student of another width (a learned projection for the hidden-state loss) with the attention loss and
    dropout, interrupted after the step-10 checkpoint and resumed, logs the losses of the run that went straight."""
    import bertkit.trainer as trainer
    cfg = DistillConfig(student="tiny", student_layers=1, hidden_weight=1.0, attention_weight=1.0, augment=0,
                        finetune=FinetuneConfig(batch_size=16, epochs=1))
    kwargs = {"lr": 3e-3, "log_every": 1, "save_every": 5}

    def run(out, resume=False):
        return distill(data["ner_teacher"], out, cfg, kwargs, data["ner_train"], data["ner_dev"], data["ner_test"],
                       resume=resume, progress=False)

    run(tmp_path / "straight")
    original = trainer._save_checkpoint

    def interrupted(run_dir, model, *rest):
        original(run_dir, model, *rest)
        if rest[-3].step == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.setattr(trainer, "_save_checkpoint", original)
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "step_00000010" / "train_state.pt", weights_only=True)
    assert set(state["extra_weights"]) == {"project.weight"}  # the projection, never the teacher
    result = run(tmp_path / "resumed", resume=True)
    expected, got = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(got) == sorted(expected) and max(got) > 10
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    assert set(losses(tmp_path / "resumed", "attention")) == set(expected)
    assert result["test"]["f1"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())["test"]["f1"]
    tags = pipeline(tmp_path / "resumed" / "model")(["Carol Smith flew to Oslo"])[0]["tags"]
    assert len(tags) == 5 and json.loads((tmp_path / "resumed" / "report.json").read_text())["metric"] == "f1"


# ---- bad input -------------------------------------------------------------------------------------------------


def test_bad_input_is_a_one_line_error(data, tmp_path, capsys):
    other = Tokenizer.train(["completely different words here"] * 5, vocab_size=40, min_frequency=1,
                            show_progress=False)
    foreign = save_model(tmp_path / "foreign", build_model(BertConfig(vocab_size=other.vocab_size, hidden_size=16,
                                                                      num_layers=1, num_heads=2), "encoder"), other)
    wrong_labels = write_csv(tmp_path / "meh.csv", [(f"a great film {i}", "pos" if i % 2 else "meh")
                                                    for i in range(40)])
    cases = [
        (args(data["base"], data, tmp_path / "a"), "not a fine-tuned classifier or tagger"),
        (args(data["mlm"], data, tmp_path / "a"), "holds a masked_lm model"),
        (["distill", str(data["teacher"]), "--train", str(wrong_labels), "--dev", str(wrong_labels), "--out",
          str(tmp_path / "a"), "-q"],
         "label 'meh' is not one of the teacher's labels"),
        (args(data["teacher"], data, tmp_path / "a", "--student", foreign), "the tokens must be the same"),
        (args(data["ner_teacher"], data, tmp_path / "a", "--augment", 2, "--augment-mlm", data["mlm"],
              split="ner_"), "NER augmentation is not supported"),
        (args(data["teacher"], data, tmp_path / "a", "--cache-teacher", "--hidden-weight", 1), "--cache-teacher"),
        (args(data["teacher"], data, tmp_path / "a", "--recipe", "bigbert"), "invalid choice"),
        (args(data["teacher"], data, tmp_path / "a", "--intermediate-epochs", 1), "--hidden-weight or --attention"),
        (args(data["teacher"], data, tmp_path / "a", "--intermediate-epochs", 3, "--hidden-weight", 1),
         "leaves no epoch"),
        (args(data["teacher"], data, tmp_path / "a", "--student-layers", 5, "--layer-map", "last"), "at most 4"),
        (args(data["teacher"], data, tmp_path / "a", "--general-text", tmp_path / "none.txt"), "no such file"),
        (args(data["teacher"], data, tmp_path / "a", "--augment", 1, "--augment-mlm", data["base"]),
         "no masked-LM head"),
        (args(data["teacher"], data, tmp_path / "a", "--student", "minii"), "neither teacher, a preset"),
        (args(data["teacher"], data, tmp_path / "a", "--student", data["base"], "--student-layers", 2),
         "keeps its own"),
        (args(data["teacher"], data, tmp_path / "a", "--student-layers", 5), "at most 4"),
        (args(data["teacher"], data, tmp_path / "a", "--soft-weight", 0, "--hard-weight", 0), "every loss weight"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("bertkit: error: ") and message in err, (argv, err)
    assert not (tmp_path / "a").exists()  # refused before anything was written
    # (the recipe option's own error is argparse's two-line usage message: checked apart)


def test_two_steps_train_the_layers_first_then_the_targets(data, tmp_path):
    """TinyBERT's schedule: in the first epoch only the hidden-state and attention losses are logged, after it
    only the soft and hard ones."""
    cfg = DistillConfig(hidden_weight=1.0, attention_weight=1.0, intermediate_epochs=1.0, student_layers=2, augment=0,
                        finetune=FinetuneConfig(batch_size=16, epochs=2))
    distill(data["teacher"], tmp_path / "st", cfg, {"lr": 3e-3, "log_every": 1}, data["train"], data["dev"],
            progress=False)
    per_epoch = 320 // 16
    logged = {k: losses(tmp_path / "st", k) for k in ("hidden", "attention", "soft", "hard")}
    first, second = set(logged["hidden"]), set(logged["soft"])
    assert first == set(logged["attention"]) and second == set(logged["hard"])
    assert first and second and max(first) < min(second)
    assert max(first) == per_epoch and max(second) == 2 * per_epoch


def test_augmentation_without_a_masked_lm_makes_one_from_the_teacher_once(data, tmp_path, monkeypatch):
    """The teacher has no MLM head and none is given: a short masked-LM run from its encoder on the training texts
    is made, kept in the cache and found again by the next run (same variants, nothing trained again)."""
    monkeypatch.setenv("BERTKIT_DISTILL_CACHE", str(tmp_path / "cache"))
    cfg = DistillConfig(augment=1, mlm_steps=6, cache_teacher=True, finetune=FinetuneConfig(batch_size=16, epochs=0.2))
    runs = [distill(data["teacher"], tmp_path / name, cfg, {"lr": 3e-3}, data["train"], data["dev"], progress=False)
            for name in ("a", "b")]
    made = list((tmp_path / "cache").glob("mlm-*"))
    assert len(made) == 1 and (made[0] / "model").is_dir() and not (made[0] / "run" / "checkpoints").exists()
    assert len([json.loads(x) for x in (made[0] / "run" / "metrics.jsonl").read_text().splitlines()
                if "loss" in x]) >= 1
    a, b = ((tmp_path / n / "augmented.jsonl").read_text() for n in ("a", "b"))
    assert a == b and a.count("\n") == runs[0]["augmented_examples"] == runs[0]["train_examples"]  # one a text


def test_the_made_masked_lm_reads_instances_as_long_as_the_texts_need():
    """95% of the texts whole, in steps of 32, 32 at least, the reading length at most: reviews of ~10 tokens make
    32-token instances (a quarter of 128's work a step); long texts keep the cap."""
    from bertkit.distill.recipe import mlm_length
    tok = Tokenizer.train([" ".join(FILLER + GOOD + BAD)] * 3, vocab_size=400, min_frequency=1, show_progress=False)
    rng = random.Random(0)
    short = [review(rng, True) for _ in range(200)]
    assert mlm_length(short, tok, 128) == 32
    words = FILLER * 6  # 72 words; each a token or more, [CLS] and [SEP] around
    mixed = [" ".join(words[:40])] * 96 + [" ".join(words)] * 4  # 95% need 42 tokens
    assert mlm_length(mixed, tok, 128) == 64
    assert mlm_length([" ".join(words)] * 10, tok, 64) == 64


def test_general_distillation_trains_the_student_once_on_plain_text(data, tmp_path, monkeypatch):
    """--general-text: before the task, the student learns the teacher's layers on unlabelled text; the result is
    cached (a second run starts from the same weights without training) and the run says so."""
    monkeypatch.setenv("BERTKIT_DISTILL_CACHE", str(tmp_path / "cache"))
    text = tmp_path / "plain.txt"
    rng = random.Random(1)
    text.write_text("".join(review(rng, i % 3 == 0) + "\n" for i in range(200)))
    cfg = DistillConfig(general_text=str(text), general_steps=20, student_layers=2, augment=0,
                        finetune=FinetuneConfig(batch_size=16, epochs=0.1))
    runs = [distill(data["teacher"], tmp_path / n, cfg, {"lr": 3e-3, "log_every": 1}, data["train"], data["dev"],
                    progress=False) for n in ("a", "b")]
    made = list((tmp_path / "cache").glob("general-*"))
    assert len(made) == 1 and all("general distillation from the teacher on plain.txt" in r["student_init"] for r in runs)
    hidden = losses(made[0] / "run", "hidden")
    assert len(hidden) == 20 and hidden[20] < 0.6 * hidden[1], hidden  # it learned the teacher's layers
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")  # the same start, the same run
    assert sorted(a) == sorted(b) and all(b[step] == pytest.approx(a[step], rel=1e-5) for step in a)
    general = load_model(made[0] / "model").model
    copied, _ = make_student(load_model(data["teacher"]).model, "teacher", 2)
    assert not torch.equal(general.bert.blocks[0].mlp.up.weight, copied.bert.blocks[0].mlp.up.weight)

    # from the encoder the teacher was fine-tuned from (TinyBERT): a general student for any task made from it
    run = distill(data["teacher"], tmp_path / "c", replace(cfg, general_teacher=str(data["base"])),
                  {"lr": 3e-3, "log_every": 1}, data["train"], data["dev"], progress=False)
    assert f"general distillation from {data['base']} on plain.txt" in run["student_init"]
    assert len(list((tmp_path / "cache").glob("general-*"))) == 2
