"""Robustness and bias on tiny models: exact edit counts of the noise, attack metrics that add up, BAE's
constraints, seeded reproducibility, FGM/PGD in fine-tuning (gradients, evaluation, exact resume), invariance
statistics on a constructed case, CrowS-style scores against a hand computation, bad input."""

import json
import random
import shutil

import numpy as np
import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, load_model, save_model
from bertkit.cli import main
from bertkit.errors import BertkitError
from bertkit.finetune import FinetuneConfig, FinetuneTask, finetune
from bertkit.inference import FillMask, TextClassifier
from bertkit.inference.embed import embed_texts
from bertkit.data.labelled import collate, encode_classification
from bertkit.data.tasks import Example
from bertkit.robust import AttackConfig, attack
from bertkit.adversarial import per_example_norm, project
from bertkit.robust.attacks import STOPWORDS, most_changed
from bertkit.robust.bias import (Pair, case_of, crows, load_categories, load_pairs, shared_positions,
                                 summarize_crows, summarize_pairs)
from bertkit.robust.mlm import load_masked_lm
from bertkit.data.noise import edit_distance, noise_words, noisy
from bertkit.data.pieces import Pieces
from test_finetune import BAD, GOOD, write_csv

FILLER = ["the", "film", "was", "a", "story", "acting", "plot", "really", "quite", "and", "with", "cast", "she", "he",
          "Emily", "James", "not"]  # test_finetune's, with people and stop-words to swap or spare


def review(rng: random.Random, positive: bool) -> str:
    words = rng.sample(FILLER, 6) + [rng.choice(GOOD if positive else BAD)]
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tokenizer, a random classifier (a large init, so words move its output), a masked LM and an encoder of
    the same vocabulary, and labelled files."""
    d = tmp_path_factory.mktemp("robust")
    rng = random.Random(0)
    rows = [(review(rng, i % 2 == 0), "pos" if i % 2 == 0 else "neg") for i in range(120)]
    w = {"dir": d, "train": write_csv(d / "train.csv", rows[:80]), "dev": write_csv(d / "dev.csv", rows[80:100]),
         "test": write_csv(d / "test.csv", rows[100:]), "rows": rows}
    extra = "women men are bad at math and my mother father cooked dinner"
    tok = Tokenizer.train([t for t, _ in rows] + [extra] * 3, vocab_size=160, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48,
                        max_position_embeddings=64, initializer_range=0.3)
    w["config"] = config
    w["classifier"] = save_model(d / "classifier", build_model(config, "sequence_classification", 2), tok,
                                 labels=["neg", "pos"])
    w["mlm"] = save_model(d / "mlm", build_model(config, "masked_lm"), tok)
    w["encoder"] = save_model(d / "encoder", build_model(config, "encoder"), tok)
    w["tok"] = tok
    return w


@pytest.fixture(scope="module")
def taught(world):
    """world's encoder fine-tuned on the reviews: its label hangs on the one sentiment word, so typos in that word
    flip it on any CPU (a random classifier's few flips moved with the kernels' rounding)."""
    cfg = FinetuneConfig(batch_size=16, epochs=10)
    out = world["dir"] / "taught"
    finetune(world["encoder"], out, cfg, {"lr": 3e-3}, world["train"], world["dev"], progress=False)
    return out / "model"


def one_line_error(args, capsys, contains: str) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("bertkit: error: "), err
    assert contains in err, err
    return err


# ---- noise --------------------------------------------------------------------------------------------------

def test_edit_distance_exact():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("ab", "ba") == 1  # an adjacent swap is one edit
    assert edit_distance("ca", "abc") == 3  # optimal string alignment, not unrestricted Damerau
    assert edit_distance("", "abc") == 3 and edit_distance("same", "same") == 0
    assert edit_distance("kitten", "sitting", limit=1) == 2  # above the limit: limit + 1
    assert edit_distance("the film", "teh film", limit=2) == 1


def test_charnoise_makes_exactly_one_or_two_edits(world):
    tok = world["tok"]
    for text, _ in world["rows"][:60]:
        pieces = Pieces.split(tok, text)
        for k in (1, 2):
            for seed in range(3):
                out = noisy(pieces, k, random.Random(seed))
                assert edit_distance(text, out.text) == k, (text, out.text)
                assert len(out) == len(pieces)  # words change in place, none vanish
                assert all(a == b or a.isalpha() for a, b in zip(pieces.words, out.words))


def test_chinese_noise_swaps_or_drops_characters():
    text = "这部电影的剧情非常精彩，演员也很好。"
    pieces = Pieces.from_spans(text, [(i, i + 1) for i, ch in enumerate(text) if ch not in "，。"])
    for k in (1, 2):
        for seed in range(10):
            assert edit_distance(text, noisy(pieces, k, random.Random(seed)).text) == k
    words = list("王芳在北京工作")  # a tagged sentence: one character a word, none may vanish
    assert all(all(noise_words(words, 2, random.Random(seed))) for seed in range(20))


# ---- attacks ------------------------------------------------------------------------------------------------

def test_deepwordbug_flips_some_and_the_metrics_add_up(world, taught):
    texts, labels = zip(*world["rows"][:40])
    cfg = AttackConfig(recipe="deepwordbug,charnoise", max_queries=60, seed=1)
    run = attack(taught, list(texts), list(labels), config=cfg, progress=False)
    s = run.summary["deepwordbug"]
    assert s["successful"] >= 5, s  # 23 here; typos in the one word that matters
    total, correct = s["examples"], s["examples"] - s["skipped"]
    assert total == 40
    assert s["success_rate"] == pytest.approx(s["successful"] / (s["successful"] + s["failed"]))
    assert s["accuracy_under_attack"] == pytest.approx((correct - s["successful"]) / total)
    assert s["clean_accuracy"] == pytest.approx(correct / total)
    for name in ("charnoise-1", "charnoise-2"):
        assert run.summary[name]["clean_accuracy"] == s["clean_accuracy"]
        assert run.summary[name]["avg_queries"] == 2.0
    for o in run.outcomes["deepwordbug"]:
        if o.result == "skipped":
            assert int(o.target.before.argmax()) != o.target.gold
            continue
        assert o.queries <= 60
        assert len(o.changed) <= most_changed(o.target, cfg)
        assert not any(o.target.pieces.words[i].lower() in STOPWORDS for i in o.changed)
        assert (int(o.after.argmax()) != o.target.gold) == (o.result == "successful")
    flipped = [o for o in run.outcomes["deepwordbug"] if o.result == "successful"]
    again = TextClassifier.load(taught)(list(o.perturbed.text for o in flipped))
    assert all(r["label"] != run.labels[o.target.gold] for r, o in zip(again, flipped))  # the flips are real


def test_bae_keeps_stopwords_and_the_similarity_constraint(world):
    texts, labels = zip(*world["rows"][:30])
    cfg = AttackConfig(recipe="bae", similarity=0.9, candidates=30)
    run = attack(world["classifier"], list(texts), list(labels), mlm=world["mlm"], config=cfg, progress=False)
    victim = TextClassifier.load(world["classifier"])
    changed = [o for o in run.outcomes["bae"] if o.changed]
    assert changed, run.summary
    for o in changed:
        for i in o.changed:
            before, after = o.target.pieces.words[i], o.perturbed.words[i]
            assert before.lower() not in STOPWORDS and after.lower() not in STOPWORDS
            assert after.isalpha() and not after.startswith("##")
    vectors = embed_texts(victim.model, victim.tokenizer, [t for o in changed for t in (o.target.pieces.text,
                                                                                        o.perturbed.text)],
                          pooling="mean", progress=False)
    assert ((vectors[0::2] * vectors[1::2]).sum(-1) >= 0.9 - 1e-5).all()


def test_attacks_are_reproducible_with_a_seed(world, tmp_path):
    texts, labels = zip(*world["rows"][:20])
    records = []
    for seed in (3, 3, 4):
        run = attack(world["classifier"], list(texts), list(labels), mlm=world["mlm"],
                     config=AttackConfig(seed=seed, similarity=0.5), progress=False)
        run.save(tmp_path / str(len(records)))
        records.append((tmp_path / str(len(records)) / "adversarial.jsonl").read_text())
    assert records[0] == records[1]
    assert records[0] != records[2]


def test_attack_cli_writes_escaped_html_and_the_table(world, tmp_path, capsys):
    rows = [(f"<b>{t}</b> &amp;", y) for t, y in world["rows"][:15]]
    out = tmp_path / "att"
    code = main(["attack", str(world["classifier"]), "--input", str(write_csv(tmp_path / "x.csv", rows)), "--out",
                 str(out), "--mlm", str(world["mlm"]), "--similarity", "0", "-q"])
    assert code == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    assert "| deepwordbug |" in table and "| bae |" in table and "| charnoise-2 |" in table
    page = (out / "attack.html").read_text()
    assert "&lt;b&gt;" in page and "&amp;amp;" in page and "<b>" not in page
    summary = json.loads((out / "attack.json").read_text())["summary"]
    records = [json.loads(x) for x in (out / "adversarial.jsonl").read_text().splitlines()]
    for name, s in summary.items():
        mine = [r for r in records if r["recipe"] == name]
        assert len(mine) == s["successful"] + s["failed"]
        assert sum(r["result"] == "successful" for r in mine) == s["successful"]
    assert "Attack success rate:" in (out / "attack.md").read_text()


def test_bae_uses_the_classifiers_own_mlm_head(world, tmp_path):
    """A Hugging Face classifier folder that kept BertForPreTraining's MLM head: bae needs no --mlm."""
    from transformers import BertConfig as HFConfig, BertForPreTraining
    c = world["config"]
    hf = BertForPreTraining(HFConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=48, max_position_embeddings=64))
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "neg", "1": "pos"},
               "label2id": {"neg": 0, "pos": 1}}
    (folder / "config.json").write_text(json.dumps(config))
    world["tok"].save(folder)
    assert load_model(folder).model.task == "sequence_classification"
    assert load_masked_lm(folder, "").model.task == "masked_lm"
    texts, labels = zip(*world["rows"][:6])
    run = attack(str(folder), list(texts), list(labels), config=AttackConfig(recipe="bae", similarity=0.0),
                 progress=False)
    assert len(run.outcomes["bae"]) == 6


def test_a_real_encoder_without_mlm_head_names_what_bae_needs(minilm_dir):
    with pytest.raises(BertkitError, match="no masked-LM head.*--mlm"):
        load_masked_lm(minilm_dir, "bae needs a masked language model of the classifier's vocabulary: give --mlm")


def test_bad_input_gives_one_line_errors(world, tmp_path, capsys):
    base = ["--out", tmp_path / "o", "-q"]
    one_line_error(["attack", world["mlm"], "--input", world["test"], *base], capsys, "not a text classifier")
    one_line_error(["attack", world["classifier"], "--input", world["test"], *base], capsys, "--mlm")
    one_line_error(["attack", world["classifier"], "--input", world["test"], "--recipe", "bae", "--mlm",
                    world["encoder"], *base], capsys, "no masked-LM head")
    one_line_error(["attack", world["classifier"], "--input", world["test"], "--recipe", "nope", *base], capsys,
                   "unknown recipe")
    (tmp_path / "empty.csv").write_text("text,label\n")
    one_line_error(["attack", world["classifier"], "--input", tmp_path / "empty.csv", *base], capsys, "no examples")
    (tmp_path / "unlabelled.csv").write_text("text\na good film\n")
    one_line_error(["attack", world["classifier"], "--input", tmp_path / "unlabelled.csv", *base], capsys, "label")
    write_csv(tmp_path / "other.csv", [("a good film", "maybe")])
    one_line_error(["attack", world["classifier"], "--input", tmp_path / "other.csv", *base], capsys, "'maybe'")
    one_line_error(["bias", world["encoder"], *base], capsys, "classifier or a masked language model")
    multi = save_model(tmp_path / "multi", build_model(world["config"], "sequence_classification", 2, "multi_label"),
                       world["tok"], labels=["a", "b"])
    one_line_error(["attack", multi, "--input", world["test"], "--recipe", "charnoise", *base], capsys,
                   "single-label")


# ---- adversarial training -----------------------------------------------------------------------------------

def _task_and_batch(world, **options):
    config = world["config"].replace(hidden_dropout=0.0, attention_dropout=0.0)  # the same forward every time
    torch.manual_seed(1)
    model = build_model(config, "sequence_classification", 2)
    examples = [Example(t, None, y) for t, y in world["rows"][:16]]
    items = encode_classification(world["tok"], examples, ["neg", "pos"], "single_label", 32)
    cfg = FinetuneConfig(batch_size=16, **options)
    task = FinetuneTask(items, cfg, world["tok"].pad_id, ["neg", "pos"], lambda m: {})
    batch = collate(items, world["tok"].pad_id, "classification", "single_label")
    batch["scale"] = torch.tensor(1 / 16)
    return model, task, batch


def _gradient(world, **options) -> tuple[torch.Tensor, torch.nn.Module]:
    model, task, batch = _task_and_batch(world, **options)
    model.train()
    loss, stats = task.loss(model, batch)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), model


def test_fgm_and_pgd_change_the_gradient_and_leave_evaluation_untouched(world):
    plain, _ = _gradient(world)
    fgm, model = _gradient(world, adversarial="fgm", adv_eps=0.5)
    pgd, _ = _gradient(world, adversarial="pgd", adv_eps=0.5, adv_steps=3)
    pgd1, _ = _gradient(world, adversarial="pgd", adv_eps=0.5, adv_steps=1)
    assert not torch.allclose(plain, fgm) and not torch.allclose(fgm, pgd)
    torch.testing.assert_close(pgd1, fgm)  # one projected step of 2.5 eps is fgm's step of eps
    assert not model.bert.embeddings.word._forward_hooks  # nothing left behind for evaluation
    fresh, _, batch = _task_and_batch(world)
    with torch.no_grad():
        model.eval(), fresh.eval()
        torch.testing.assert_close(model(batch["input_ids"], batch["attention_mask"]),
                                   fresh(batch["input_ids"], batch["attention_mask"]))


def test_projection_keeps_each_example_in_the_ball():
    r = torch.randn(4, 5, 3) * torch.tensor([0.1, 1.0, 3.0, 10.0]).view(4, 1, 1)
    p = project(r, 1.0)
    norms = per_example_norm(p).flatten()
    assert (norms <= 1.0 + 1e-6).all()
    torch.testing.assert_close(p[0], r[0])  # already inside: unchanged
    torch.testing.assert_close(norms[2:], torch.ones(2))


def test_adversarial_finetuning_with_noise_resumes_exactly(world, tmp_path, capsys):
    cfg = FinetuneConfig(batch_size=16, epochs=2, adversarial="pgd", adv_steps=2, adv_eps=0.5, augment_noise=0.5)
    train = {"log_every": 1, "lr": 3e-3}
    a = tmp_path / "a"
    results = finetune(world["encoder"], a, cfg, train, world["train"], world["dev"], progress=False)
    assert results["noised_copies"] > 20 and results["train_examples"] == 80 + results["noised_copies"]
    steps = sorted(p.name for p in (a / "checkpoints").iterdir())
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoints" / steps[-1])  # as if killed after the first epoch's checkpoint
    finetune(world["encoder"], b, cfg, train, world["train"], world["dev"], resume=True, progress=False)

    def losses(run):
        return [(r["step"], r["loss"], r["adv_loss"]) for r in map(json.loads, (run / "metrics.jsonl").open())
                if "loss" in r]
    assert losses(a) == losses(b) and len(losses(a)) == int(steps[-1].split("_")[1])
    code = main(["finetune", str(world["encoder"]), "--train", str(world["train"]), "--out", str(tmp_path / "qa"),
                 "--task", "qa", "--augment-noise", "0.5", "-q"])
    assert code == 2 and "augment_noise works for classification and ner" in capsys.readouterr().err


def test_ner_trains_with_fgm_and_noise(world, tmp_path, capsys):
    rng = random.Random(0)
    sentences = []
    for _ in range(40):
        words = rng.sample(FILLER[:12], 4) + ["Emily"]
        rng.shuffle(words)
        sentences.append("\n".join(f"{w} {'B-PER' if w == 'Emily' else 'O'}" for w in words))
    conll = tmp_path / "ner.conll"
    conll.write_text("\n\n".join(sentences) + "\n")
    code = main(["finetune", str(world["encoder"]), "--task", "ner", "--train", str(conll), "--dev", str(conll),
                 "--out", str(tmp_path / "ner"), "--batch-size", "8", "--epochs", "1", "--adversarial", "fgm",
                 "--augment-noise", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "ner" / "metrics.json").read_text())
    assert metrics["noised_copies"] == 40 and metrics["train_examples"] == 80


# ---- bias ---------------------------------------------------------------------------------------------------

def test_invariance_statistics_exact_on_a_constructed_case():
    p = np.array
    pairs = [  # case 0: two counterparts, one flips; case 1: none flips
        Pair("gender", "input", "male", "Emily liked it", "James liked it", p([0.2, 0.8]), p([0.6, 0.4]), 0),
        Pair("gender", "input", "male", "Emily liked it", "David liked it", p([0.2, 0.8]), p([0.3, 0.7]), 0),
        Pair("gender", "input", "female", "James hated it", "Emily hated it", p([0.9, 0.1]), p([0.7, 0.3]), 1),
        Pair("religion", "template", "Muslim", "a Christian", "a Muslim", p([0.5, 0.5]), p([0.5, 0.5]), 2),
    ]
    out = summarize_pairs(pairs, ["neg", "pos"])
    gender = out["tests"][0]
    assert (gender["cases"], gender["failed"], gender["pairs"], gender["flipped"]) == (2, 1, 3, 1)
    assert gender["failure_rate"] == 0.5 and gender["flip_rate"] == pytest.approx(1 / 3)
    assert gender["mean_shift"] == pytest.approx((0.4 + 0.1 + 0.2) / 3) and gender["max_shift"] == pytest.approx(0.4)
    male = next(g for g in out["groups"] if g["group"] == "male")
    assert male["pairs"] == 2 and male["flip_rate"] == 0.5 and male["mean_shift"] == pytest.approx(0.25)
    assert out["tests"][1]["flipped"] == 0 and out["tests"][1]["max_shift"] == 0.0
    assert out["worst"][0]["counterpart"] == "James liked it" and out["worst"][0]["flipped"]


def test_terms_are_swapped_in_place():
    en, zh = load_categories("en"), load_categories("zh")
    rng = random.Random(0)
    case = case_of("He said he liked his seat.", en["pronoun"], "input", rng, 2)
    assert [t for t, _, _ in case.counterparts] == ["She said she liked his seat."]  # "he" is swapped, not "his"
    case = case_of("Ask Emily, Emily knows.", en["gender"], "input", rng, 2)
    assert len(case.counterparts) == 2 and all(t.count(term) == 2 for t, term, g in case.counterparts)
    assert {g for _, _, g in case.counterparts} == {"male"}
    assert case_of("Will you come?", en["gender"], "input", rng, 2) is None
    case = case_of("其他人说他很好。", zh["pronoun"], "input", rng, 2)
    assert [t for t, _, _ in case.counterparts] == ["其他人说她很好。"]
    case = case_of("a muslim friend", en["religion"], "input", rng, 1)
    assert case.term == "Muslim" and len(case.counterparts) == 7


def test_bias_cli_on_a_classifier_and_a_masked_lm(world, tmp_path, capsys):
    assert main(["bias", str(world["classifier"]), "--input", str(world["test"]), "--out", str(tmp_path / "c"),
                 "-q"]) == 0
    result = json.loads((tmp_path / "c" / "bias.json").read_text())
    assert result["input_cases"] > 0 and result["template_cases"] > 0
    assert {t["source"] for t in result["tests"]} == {"input", "template"}
    assert (tmp_path / "c" / "bias.png").stat().st_size > 1000
    assert "INV: swap" in (tmp_path / "c" / "bias.md").read_text()
    assert main(["bias", str(world["mlm"]), "--out", str(tmp_path / "m"), "-q"]) == 0
    result = json.loads((tmp_path / "m" / "bias.json").read_text())
    assert result["pairs"] == len(load_pairs("en")) >= 40 and len(load_pairs("zh")) >= 40
    assert set(result["categories"]) >= {"gender", "race/origin", "religion", "age", "nationality", "disability"}
    capsys.readouterr()


def test_crows_score_is_50_when_both_sentences_score_the_same(world, tmp_path):
    pairs = [{"category": "x", "stereo": "a", "anti": "b"}] * 3 + [{"category": "y", "stereo": "c", "anti": "d"}]
    out = summarize_crows(pairs, [(-1.0, -1.0), (-2.0, -1.0), (-1.0, -2.0), (-3.0, -3.0)])
    assert out["stereo_pct"] == 50.0 and out["categories"]["x"]["stereo_pct"] == 50.0
    model = build_model(world["config"], "masked_lm")
    with torch.no_grad():  # the MLM head's output no longer depends on the input: every token is 1/V
        model.mlm.norm.weight.zero_()
        model.mlm.norm.bias.zero_()
    mlm = FillMask.from_loaded(load_model(save_model(tmp_path / "flat", model, world["tok"])), tmp_path / "flat")
    result = crows(mlm, load_pairs("en"), progress=False)
    assert result["stereo_pct"] == 50.0
    assert all(s["stereo_score"] == pytest.approx(s["anti_score"]) for s in result["scores"])


def test_pseudo_log_likelihood_matches_a_hand_computation(world):
    assert shared_positions([2, 10, 11, 12, 3], [2, 13, 11, 12, 3], {2, 3}) == ([2, 3], [2, 3])
    assert shared_positions([2, 10, 11, 3], [2, 14, 15, 10, 11, 3], {2, 3}) == ([1, 2], [3, 4])
    mlm = FillMask.load(world["mlm"])
    tok, model = mlm.tokenizer, mlm.model
    pair = {"category": "x", "stereo": "the plot was dull", "anti": "the plot was great"}
    assert [len(tok.tokenize(w)) for w in "the plot was dull great".split()] == [1] * 5
    result = crows(mlm, [pair], progress=False)
    for key in ("stereo", "anti"):
        ids = tok.encode(pair[key]).ids  # [CLS] the plot was dull/great [SEP]
        total = 0.0
        for p in (1, 2, 3):  # each shared token masked in turn
            masked = torch.tensor([ids[:p] + [tok.mask_id] + ids[p + 1:]])
            with torch.no_grad():
                total += float(model(masked)[0, p].log_softmax(-1)[ids[p]])
        assert result["scores"][0][f"{key}_score"] == pytest.approx(total, abs=1e-4)
