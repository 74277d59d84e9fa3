"""Metrics: exact values on hand-computed cases, and agreement with scikit-learn / scipy on random data."""

import json
import math
import warnings

import numpy as np
import pytest
from pytest import approx
from scipy import stats
from sklearn import metrics as skm

from bertkit import BertkitError
from bertkit.evaluate import (
    bio_decode,
    bio_entities,
    classification_metrics,
    entity_metrics,
    expected_calibration_error,
    multilabel_metrics,
    orphan_inside_tags,
    plot_confusion,
    regression_metrics,
    squad_metrics,
    squad_normalize,
)


def assert_json(result: dict) -> None:
    json.dumps(result, allow_nan=False)  # plain Python types, no NaN


# ---------------------------------------------------------------------------------------------
# classification

Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_classification_hand_computed():
    # Confusion matrix (rows true a, b, c; columns predicted):
    #   a [2 1 0]   tp = (2, 1, 1), support = (3, 2, 1), predicted = (2, 2, 2)
    #   b [0 1 1]   P = (2/2, 1/2, 1/2)   R = (2/3, 1/2, 1/1)
    #   c [0 0 1]   F1 = 2tp / (2tp + fp + fn) = (4/5, 2/4, 2/3)
    # accuracy = 4/6; macro P = (1 + 1/2 + 1/2)/3 = 2/3; macro R = (2/3 + 1/2 + 1)/3 = 13/18
    # macro F1 = (4/5 + 1/2 + 2/3)/3 = 59/90; weighted F1 = (3*4/5 + 2*1/2 + 1*2/3)/6 = 61/90
    # micro P = R = F1 = accuracy for single-label data.
    # MCC (Gorodkin): s = 6, c = 4, t = (3, 2, 1), p = (2, 2, 2): p.t = 12, p.p = 12, t.t = 14
    #   (c s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt(24 * 22) = 12 / sqrt(528)
    r = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["accuracy"] == approx(4 / 6)
    assert r["macro_precision"] == approx(2 / 3)
    assert r["macro_recall"] == approx(13 / 18)
    assert r["macro_f1"] == approx(59 / 90)
    assert r["weighted_f1"] == approx(61 / 90)
    assert r["micro_precision"] == r["micro_recall"] == r["micro_f1"] == approx(4 / 6)
    assert r["mcc"] == approx(12 / math.sqrt(528))
    assert r["per_class"]["a"] == approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert r["per_class"]["c"] == approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert r["n"] == 6 and "ece" not in r
    assert_json(r)


def test_a_label_absent_from_gold_and_predictions_is_listed_but_not_averaged():
    # Label "d" has no support and is never predicted: its scores are 0/0, so macro averages skip it
    # (scikit-learn's default); it still has a row and a column in the matrix.
    r = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert r["macro_f1"] == approx(59 / 90) and r["macro_recall"] == approx(13 / 18)
    assert r["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["confusion_matrix"][3] == [0, 0, 0, 0] and [row[3] for row in r["confusion_matrix"]] == [0, 0, 0, 0]


def test_zero_division_and_degenerate_mcc():
    # Class b has support but is never predicted: precision 0/0 -> 0. A constant prediction: MCC 0/0 -> 0.
    r = classification_metrics([0, 1, 1], [0, 0, 0], ["a", "b"])
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert r["mcc"] == 0.0
    assert classification_metrics([1, 1], [1, 1], ["a", "b"])["mcc"] == 0.0


@pytest.mark.parametrize("L,n_labels_used,seed", [(2, 2, 0), (5, 5, 1), (7, 5, 2)])
def test_classification_matches_sklearn(L, n_labels_used, seed):
    rng = np.random.default_rng(seed)
    n = 300
    t = rng.integers(0, n_labels_used, n)
    p = np.where(rng.random(n) < 0.6, t, rng.integers(0, n_labels_used, n))
    probs = rng.dirichlet(np.ones(L), n)
    r = classification_metrics(t.tolist(), p.tolist(), [f"c{i}" for i in range(L)], probs=probs)
    assert r["accuracy"] == approx(skm.accuracy_score(t, p))
    assert r["mcc"] == approx(skm.matthews_corrcoef(t, p))
    assert r["confusion_matrix"] == skm.confusion_matrix(t, p, labels=range(L)).tolist()
    for avg in ("macro", "micro"):
        P, R, F, _ = skm.precision_recall_fscore_support(t, p, average=avg, zero_division=0)
        assert (r[f"{avg}_precision"], r[f"{avg}_recall"], r[f"{avg}_f1"]) == approx((P, R, F))
    assert r["weighted_f1"] == approx(skm.f1_score(t, p, average="weighted", zero_division=0))
    P, R, F, S = skm.precision_recall_fscore_support(t, p, labels=range(L), average=None, zero_division=0)
    for i in range(L):
        assert r["per_class"][f"c{i}"] == approx({"precision": P[i], "recall": R[i], "f1": F[i], "support": S[i]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # y_pred -> y_proba rename in scikit-learn 1.9
        assert r["log_loss"] == approx(skm.log_loss(t, probs, labels=range(L)))
    assert 0.0 <= r["ece"] <= 1.0
    assert_json(r)


@pytest.mark.parametrize("call,message", [
    (lambda: classification_metrics([0, 1], [0], ["a", "b"]), "2 gold labels but 1 predictions"),
    (lambda: classification_metrics([0, 2], [0, 1], ["a", "b"]), "class id 2"),
    (lambda: classification_metrics([], [], ["a", "b"]), "no examples"),
    (lambda: classification_metrics([0], [0], ["a", "a"]), "duplicate label"),
    (lambda: classification_metrics([0], [0], ["a", "b"], probs=np.ones((1, 3)) / 3), r"shape \(1, 3\)"),
    (lambda: regression_metrics([1.0, 2.0], [1.0]), "2 gold values but 1 predictions"),
    (lambda: regression_metrics([1.0, float("nan")], [1.0, 2.0]), "finite"),
    (lambda: multilabel_metrics(np.zeros((2, 3)), np.zeros((2, 2)), ["a", "b", "c"]), "expected"),
    (lambda: squad_metrics({}, {}), "no gold questions"),
])
def test_user_errors_are_one_line(call, message):
    with pytest.raises(BertkitError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


def test_logits_are_rejected():
    with pytest.raises(ValueError, match="not logits"):
        classification_metrics([0, 1], [0, 1], ["a", "b"], probs=np.array([[2.0, -1.0], [0.5, 3.0]]))


# ---------------------------------------------------------------------------------------------
# calibration


def test_ece_hand_computed():
    # 5 bins: (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]
    #   conf .90 right  -> (.8, 1]: n 1, acc 1,   conf .9   -> 1 * |1 - .9|      = .10
    #   conf .70 wrong  -> (.6, .8]: n 2, acc 1/2, conf .675 -> 2 * |.5 - .675|  = .35
    #   conf .65 right  -> (.6, .8]
    #   conf .50 right  -> (.4, .6]: n 1, acc 1,   conf .5   -> 1 * |1 - .5|     = .50
    #   conf .40 wrong  -> (.2, .4] (an upper edge belongs to its bin): 1 * |0 - .4| = .40
    # ECE = (.10 + .35 + .50 + .40) / 5 = .27   (were .40 put in (.4, .6], it would be .11)
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.1, 0.65, 0.25], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3]])
    y = [0, 1, 1, 0, 2]
    assert expected_calibration_error(probs, y, n_bins=5) == approx(0.27)
    # log loss = -mean(log p_true) over p_true = .9, .2, .65, .5, .3
    r = classification_metrics(y, probs.argmax(1).tolist(), ["x", "y", "z"], probs=probs)
    assert r["log_loss"] == approx(-np.log([0.9, 0.2, 0.65, 0.5, 0.3]).mean())
    assert r["ece"] == approx(expected_calibration_error(probs, y))  # 15 bins by default


def test_ece_of_perfect_calibration_and_of_overconfidence():
    # All confident and right: 0. All confident (.99) and wrong: .99.
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 1]) == 0.0
    assert expected_calibration_error(np.array([[0.99, 0.01]] * 4), [1, 1, 1, 1]) == approx(0.99)


# ---------------------------------------------------------------------------------------------
# multi-label


def test_multilabel_hand_computed():
    # labels x, y, z; row 0 misses z, row 1 adds z.
    #   tp = (1, 1, 0), fp = (0, 0, 1), fn = (0, 0, 1)
    #   per class F1 = (1, 1, 0) -> macro F1 2/3; micro: tp 2, fp 1, fn 1 -> P = R = F1 = 2/3
    #   no row exactly right -> subset accuracy 0; 2 of 6 cells wrong -> Hamming loss 1/3
    r = multilabel_metrics(np.array([[1, 0, 1], [0, 1, 0]]), np.array([[1, 0, 0], [0, 1, 1]]), ["x", "y", "z"])
    assert r["subset_accuracy"] == 0.0 and r["hamming_loss"] == approx(1 / 3)
    assert r["micro_precision"] == r["micro_recall"] == r["micro_f1"] == approx(2 / 3)
    assert r["macro_f1"] == approx(2 / 3)
    assert r["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert_json(r)


def test_multilabel_matches_sklearn():
    rng = np.random.default_rng(3)
    t = (rng.random((200, 6)) < 0.3).astype(int)
    p = np.where(rng.random((200, 6)) < 0.8, t, 1 - t)
    t[:, 5] = p[:, 5] = 0  # a label nobody has: its 0/0 scores count as 0 in the macro average
    r = multilabel_metrics(t, p, list("abcdef"))
    assert r["subset_accuracy"] == approx(skm.accuracy_score(t, p))
    assert r["hamming_loss"] == approx(skm.hamming_loss(t, p))
    for avg in ("micro", "macro"):
        assert r[f"{avg}_precision"] == approx(skm.precision_score(t, p, average=avg, zero_division=0))
        assert r[f"{avg}_recall"] == approx(skm.recall_score(t, p, average=avg, zero_division=0))
        assert r[f"{avg}_f1"] == approx(skm.f1_score(t, p, average=avg, zero_division=0))


# ---------------------------------------------------------------------------------------------
# regression


def test_regression_hand_computed():
    # err = (.5, 0, -1, 1): MSE = 2.25/4, MAE = 2.5/4; SS_tot = 2.25 + .25 + .25 + 2.25 = 5 -> R^2 = 1 - 2.25/5
    r = regression_metrics([1, 2, 3, 4], [1.5, 2, 2, 5])
    assert (r["mse"], r["mae"], r["r2"]) == approx((0.5625, 0.625, 0.55))
    assert_json(r)


def test_spearman_with_ties_hand_computed():
    # x = (1, 2, 2, 3) -> ranks (1, 2.5, 2.5, 4); y = (2, 9, 4, 10) -> ranks (1, 3, 2, 4)
    # centred ranks: (-1.5, 0, 0, 1.5) and (-1.5, .5, -.5, 1.5)
    # rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9). (The no-ties shortcut 1 - 6 sum d^2 / (n(n^2 - 1)) gives 0.95.)
    # Pearson of x, y: centred (-1, 0, 0, 1) and (-4.25, 2.75, -2.25, 3.75) -> 8 / sqrt(2 * 44.75)
    r = regression_metrics([1, 2, 2, 3], [2, 9, 4, 10])
    assert r["spearman"] == approx(math.sqrt(0.9))
    assert r["pearson"] == approx(8 / math.sqrt(89.5))


def test_regression_matches_scipy():
    rng = np.random.default_rng(4)
    t = rng.integers(0, 6, 300).astype(float)  # STS-B-like scores with many ties
    p = np.round(t + rng.normal(0, 1.5, 300), 1)
    r = regression_metrics(t, p)
    assert r["pearson"] == approx(stats.pearsonr(t, p)[0])
    assert r["spearman"] == approx(stats.spearmanr(t, p)[0])
    assert r["r2"] == approx(skm.r2_score(t, p)) and r["mse"] == approx(skm.mean_squared_error(t, p))


def test_constant_series_give_zero_not_nan():
    r = regression_metrics([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])
    assert r["pearson"] == r["spearman"] == 0.0 and r["r2"] == 0.0
    assert regression_metrics([2.0, 2.0], [2.0, 2.0])["r2"] == 1.0
    assert_json(r)


# ---------------------------------------------------------------------------------------------
# BIO entities


@pytest.mark.parametrize("tags,spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),  # entity ends at sentence end
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),  # I- after O starts an entity
    (["I-ORG"], [("ORG", 0, 1)]),  # I- at the very start too
    (["B-LOC", "I-PER"], [("LOC", 0, 1), ("PER", 1, 2)]),  # I-PER after B-LOC: a new PER
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),  # B- B-: two entities
    (["B-PER", "I-PER", "I-LOC", "I-LOC"], [("PER", 0, 2), ("LOC", 2, 4)]),
    (["B-WORK-OF-ART", "I-WORK-OF-ART"], [("WORK-OF-ART", 0, 2)]),  # only the first hyphen is the prefix's
    (["O", "O", "O"], []),  # all O
    ([], []),
])
def test_bio_entities(tags, spans):
    assert bio_entities(tags) == spans


@pytest.mark.parametrize("tag", ["PER", "B-", "E-PER", "S-PER", "B_PER", "o", ""])
def test_bio_rejects_other_tags(tag):
    with pytest.raises(ValueError, match="not O, B-<type> or I-<type>"):
        bio_entities(["O", tag])


def test_entity_metrics_hand_computed():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"], ["B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"], ["B-PER", "O"], ["B-ORG", "I-ORG", "O"]]
    # gold: PER(0,2), LOC(3,4) in s0; ORG(0,3) in s2                     -> 3
    # pred: PER(0,2), LOC(3,4) (I-LOC after O opens it) in s0; PER(0,1) in s1; ORG(0,2) in s2 -> 4
    # exact matches: PER and LOC of s0 -> 2: P = 2/4, R = 2/3, F1 = 2*2 / (4 + 3) = 4/7
    # per type: LOC 1/1/1; ORG 0 (span too short); PER P 1/2, R 1, F1 2/3
    # tokens right: 3/4 + 1/2 + 2/3 -> 6/9 (B-LOC vs I-LOC counts as a wrong tag, not a wrong entity)
    r = entity_metrics(true, pred)
    assert (r["precision"], r["recall"], r["f1"]) == approx((0.5, 2 / 3, 4 / 7))
    assert list(r["per_type"]) == ["LOC", "ORG", "PER"]
    assert r["per_type"]["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert r["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_type"]["PER"] == approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert r["token_accuracy"] == approx(6 / 9)
    assert r["n_entities"] == 3 and r["n"] == 3
    assert_json(r)


def test_entities_do_not_cross_sentences_and_all_o_scores_zero():
    r = entity_metrics([["B-PER"], ["I-PER"]], [["B-PER", ], ["I-PER"]])
    assert r["n_entities"] == 2 and r["f1"] == 1.0
    r = entity_metrics([["O", "O"]], [["O", "O"]])
    assert (r["precision"], r["recall"], r["f1"], r["token_accuracy"], r["per_type"]) == (0.0, 0.0, 0.0, 1.0, {})


def test_entity_metrics_errors_name_the_sentence():
    with pytest.raises(BertkitError, match="sentence 1: 2 gold tags but 1 predicted"):
        entity_metrics([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(BertkitError, match="2 gold sentences but 1 predicted"):
        entity_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(BertkitError, match="sentence 0: tag 'PER'"):
        entity_metrics([["PER"]], [["O"]])


# ---------------------------------------------------------------------------------------------
# SQuAD


def test_squad_normalize():
    assert squad_normalize("The Eiffel Tower!") == "eiffel tower"
    assert squad_normalize("  An   apple,\ta day ") == "apple day"
    assert squad_normalize("theater (the)") == "theater"  # articles only as whole words
    assert squad_normalize("the") == ""


def test_squad_hand_computed():
    gold = {
        "q1": ["Eiffel Tower"],
        "q2": ["red dog", "big red dog barked loudly"],
        "q3": [],  # no answer
        "q4": [""],  # no answer, written the other way
        "q5": ["Paris"],
        "q6": [],  # no answer, and no prediction at all
    }
    pred = {"q1": "The Eiffel Tower!", "q2": "the big red dog barked", "q3": "", "q4": "Paris", "q5": ""}
    # q1: normalised equal -> EM 1, F1 1
    # q2: prediction tokens (big red dog barked)
    #     vs (red dog): 2 common -> P 2/4, R 2/2 -> F1 2/3
    #     vs (big red dog barked loudly): 4 common -> P 4/4, R 4/5 -> F1 8/9; max -> EM 0, F1 8/9
    # q3: "" on a no-answer question -> 1, 1      q4: an answer on a no-answer question -> 0, 0
    # q5: "" on an answerable question -> 0, 0    q6: missing counts as "" -> 1, 1
    # EM = 3/6 = 50%; F1 = (1 + 8/9 + 1 + 0 + 0 + 1)/6 = 35/54
    # has answer (q1, q2, q5): EM 1/3, F1 (1 + 8/9)/3 = 17/27; no answer (q3, q4, q6): EM = F1 = 2/3
    r = squad_metrics(pred, gold)
    assert r["exact_match"] == approx(50.0) and r["f1"] == approx(100 * 35 / 54)
    assert r["has_answer_exact_match"] == approx(100 / 3) and r["has_answer_f1"] == approx(100 * 17 / 27)
    assert r["no_answer_exact_match"] == approx(200 / 3) and r["no_answer_f1"] == approx(200 / 3)
    assert (r["n"], r["n_missing"], r["has_answer_n"], r["no_answer_n"]) == (6, 1, 3, 3)
    assert_json(r)


def test_squad_v1_only_and_abstaining_by_normalisation():
    r = squad_metrics({"a": "eiffel tower", "b": "a red dog"}, {"a": ["The Eiffel Tower!"], "b": ["red"]})
    # b: (red dog) vs (red): P 1/2, R 1 -> F1 2/3
    assert r["exact_match"] == approx(50.0) and r["f1"] == approx(100 * (1 + 2 / 3) / 2)
    assert "has_answer_f1" not in r and r["n_missing"] == 0
    # As in the official v2.0 script, an answer that normalises to "" ("The.") is an abstention.
    assert squad_metrics({"q": "The."}, {"q": []})["exact_match"] == 100.0


# ---------------------------------------------------------------------------------------------
# plot


def test_plot_confusion_writes_a_png(tmp_path):
    r = classification_metrics(Y_TRUE, Y_PRED, ["positive", "negative", "neutral"])
    path = plot_confusion(r["confusion_matrix"], ["positive", "negative", "neutral"], tmp_path / "cm" / "cm.png",
                          title="dev")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with pytest.raises(ValueError, match="expected"):
        plot_confusion([[1, 2]], ["a"], tmp_path / "bad.png")


# ---- BIO decoding ---------------------------------------------------------------------------------------------

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _well_formed(tags: list[str]) -> bool:
    return orphan_inside_tags(tags) == 0


def test_bio_decode_is_the_best_well_formed_sequence():
    """Against brute force: every one of the 5^n sequences of up to 5 words, on random scores."""
    import itertools
    rng = np.random.default_rng(0)
    for n in range(1, 6):
        for _ in range(20):
            scores = np.log(rng.dirichlet(np.ones(len(BIO)) * 0.5, size=n))
            path = bio_decode(scores, BIO)
            assert _well_formed([BIO[k] for k in path])
            best = max((seq for seq in itertools.product(range(len(BIO)), repeat=n)
                        if _well_formed([BIO[k] for k in seq])), key=lambda seq: scores[np.arange(n), seq].sum())
            assert scores[np.arange(n), path].sum() == approx(scores[np.arange(n), best].sum(), abs=1e-12)


def test_bio_decode_repairs_an_orphan_and_keeps_a_valid_argmax():
    p = np.log(np.array([[0.1, 0.1, 0.6, 0.1, 0.1],    # argmax I-PER first: not allowed
                         [0.1, 0.1, 0.7, 0.05, 0.05]]))
    assert [BIO[k] for k in bio_decode(p, BIO)] == ["B-PER", "I-PER"]
    valid = np.log(np.array([[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1], [0.6, 0.1, 0.1, 0.1, 0.1]]))
    assert bio_decode(valid, BIO) == valid.argmax(-1).tolist()
    assert bio_decode(np.zeros((0, 5)), BIO) == []
    # tags that are not BIO: argmax, untouched
    assert bio_decode(np.log(np.array([[0.2, 0.8], [0.9, 0.1]])), ["x", "y"]) == [1, 0]


def test_orphan_inside_tags_counts_what_seqeval_would_open_without_a_b():
    assert orphan_inside_tags(["I-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-PER", "B-PER", "I-PER"]) == 2
    assert orphan_inside_tags(["O", "B-LOC", "I-LOC"]) == 0
