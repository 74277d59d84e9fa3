"""Audits that know what they were made with: an embeddings index refuses a query model other than its own, is
replaced only once a new one is complete, streams and resumes; `bias` refuses an MLM head drawn at random on
load and counts pairs it cannot tell apart as unscorable."""

import json
import shutil

import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, save_model
from bertkit.cli import main
from bertkit.errors import BertkitError
from bertkit.inference import FillMask
from bertkit.robust.bias import crows
from bertkit.robust.mlm import load_masked_lm

TEXTS = ["the film was great", "a wonderful story", "really boring plot", "terrible acting and cast",
         "quite a great cast", "the plot was boring", "a story with a great cast", "boring and terrible",
         "the plot was dull", "my mother cooked dinner"]


def one_line_error(args, capsys, contains: str) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("bertkit: error: "), err
    assert contains in err, err
    return err


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS * 3, vocab_size=120, min_frequency=1, show_progress=False)


def tiny(tok, hidden: int = 16) -> BertConfig:
    return BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_layers=1, num_heads=2,
                      intermediate_size=24, max_position_embeddings=32)


# ---- bias --------------------------------------------------------------------------------------------------

def test_bias_refuses_a_masked_lm_whose_head_is_drawn_at_load(tok, tmp_path, capsys):
    """A Hugging Face BertForMaskedLM folder whose weights hold only the encoder: its MLM head would be random,
    another score each run."""
    torch.manual_seed(0)
    folder = save_model(tmp_path / "enc", build_model(tiny(tok), "encoder"), tok)
    (folder / "bertkit.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["BertForMaskedLM"]}))
    with pytest.raises(BertkitError, match="masked-LM head .* initialised at random"):
        load_masked_lm(folder, "give a trained one")
    one_line_error(["bias", folder, "--out", tmp_path / "b", "-q"], capsys, "initialised at random")
    assert not (tmp_path / "b" / "bias.json").exists()


def test_pairs_the_model_cannot_tell_apart_are_unscorable_not_passes(tok, tmp_path, capsys):
    torch.manual_seed(0)
    mlm_dir = save_model(tmp_path / "mlm", build_model(tiny(tok), "masked_lm"), tok)
    scored = {"category": "a", "stereo": "the plot was dull", "anti": "the plot was great"}
    pairs = [scored,
             {"category": "a", "stereo": "the plot was Ωψ", "anti": "the plot was Ξλ"},  # both sides [UNK]
             {"category": "b", "stereo": "the plot was great", "anti": "the  plot was great"}]  # tokenize alike
    assert tok.encode("Ωψ", add_special_tokens=False).ids == [tok.unk_id]
    mlm = FillMask.load(mlm_dir)
    result = crows(mlm, pairs, progress=False)
    alone = crows(mlm, [scored], progress=False)
    assert alone["unscorable"] == 0 and alone["stereo_pct"] in (0.0, 100.0)  # a tie of random weights: unlikely
    assert (result["pairs"], result["unscorable"], result["stereo_pct"]) == (3, 2, alone["stereo_pct"])
    assert result["categories"]["b"] == {"pairs": 1, "unscorable": 1, "stereo_pct": None}
    assert [s.get("unscorable") is not None for s in result["scores"]] == [False, True, True]
    # the command line: counted in bias.json and the table
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    assert main(["bias", str(mlm_dir), "--input", str(data), "--out", str(tmp_path / "b"), "-q"]) == 0
    written = json.loads((tmp_path / "b" / "bias.json").read_text())
    assert written["unscorable"] == 2 and written["stereo_pct"] == alone["stereo_pct"]
    assert "| b | 1 | 1 | n/a |" in capsys.readouterr().out
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs[1:]))
    one_line_error(["bias", mlm_dir, "--input", data, "--out", tmp_path / "c", "-q"], capsys,
                   "none of the 2 sentence pairs can be scored")
