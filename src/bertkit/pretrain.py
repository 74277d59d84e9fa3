"""Pre-training recipe: masked language modelling (+ next-sentence prediction) on a prepared corpus.

Batches: `batch_size` is the *global* batch of one optimiser step, split into `accum` micro-steps and, under
torchrun, across processes. Every process builds and masks the whole global micro-batch with the same
seeded generator (cheap next to the model) and keeps its own rows, and every loss is a sum divided by the
global count of its targets. So one process, or N processes, or accumulation, all compute the same
gradient for the same --batch-size: the distributed test checks exactly that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from bertkit import objectives
from bertkit.config import BertConfig
from bertkit.data.corpus import Corpus
from bertkit.data.instances import InstanceStream, Position, collate
from bertkit.data.masking import mask_tokens
from bertkit.data.words import WordStarts
from bertkit.errors import BertkitError
from bertkit.model.bert import choose_execution
from bertkit.model.heads import build_model
from bertkit.objectives import IGNORE_INDEX
from bertkit.options import at_least, between, check_fields
from bertkit.runs import finish_run, start_run
from bertkit.trainer import Step, TrainConfig, train


@dataclass
class PretrainConfig:
    max_len: int = field(default=128, metadata=at_least(8))
    """Tokens per instance, [CLS] and [SEP]s included."""
    batch_size: int = field(default=32, metadata=at_least(1))
    """Instances per optimiser step, all processes and micro-steps together."""
    accum: int = field(default=1, metadata=at_least(1))
    """Micro-steps per optimiser step (gradient accumulation)."""
    nsp: bool = True
    """Next-sentence prediction pairs (BERT); off: contiguous text packed into each instance (RoBERTa/MosaicBERT)."""
    short_seq_prob: float = field(default=0.1, metadata=between(0.0, 1.0))
    """Share of NSP instances given a shorter random target length, as in BERT."""
    mask_rate: float = field(default=0.15, metadata=between(0.0, 1.0, low_open=True, high_open=True))
    """Share of tokens selected for masked-LM prediction (80% become [MASK], 10% a random token, 10% stay)."""
    whole_word: bool = False
    """Mask every piece of a word together (whole-word masking); Chinese text is cut into words by jieba
    (Chinese-BERT-wwm's masking; pip install 'bertkit[zh]')."""
    sparse_mlm: bool = True
    """Run the MLM decoder on masked positions only (same loss, far less work)."""
    dropout: float | None = field(default=None, metadata=between(0.0, 1.0, high_open=True))
    """Dropout (hidden and attention) while pre-training; unset keeps the model's. 0 learns more per step on a short
    budget (Cramming); the saved model keeps its own dropout for fine-tuning."""
    eval_instances: int = field(default=512, metadata=at_least(1))
    """Held-out instances scored at each evaluation (MLM and NSP accuracy)."""
    eval_batch_size: int = field(default=64, metadata=at_least(1))
    """Instances per forward pass when scoring held-out data."""
    seed: int = field(default=0, metadata=at_least(0))
    """Fixes the instances and the masking: same seed, same losses (`bertkit pretrain` also seeds the initial
    weights and dropout with it; from Python, TrainConfig.seed does)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batch_size % self.accum:
            raise BertkitError(f"batch_size {self.batch_size} must be a multiple of accum {self.accum}")


class PretrainTask:
    def __init__(self, corpus: Corpus, cfg: PretrainConfig):
        self.cfg = cfg
        tok = corpus.tokenizer
        self.stream = InstanceStream(corpus, "train", cfg.max_len, nsp=cfg.nsp, short_seq_prob=cfg.short_seq_prob,
                                     seed=cfg.seed)
        self.pad_id, self.mask_id, self.vocab_size = tok.pad_id, tok.mask_id, tok.vocab_size
        self.special_ids = torch.tensor(sorted(set(tok.special_ids)))
        self.random_low = max(tok.special_ids) + 1 if max(tok.special_ids) < 16 else 0
        self.word_starts = WordStarts(tok.vocab()) if cfg.whole_word else None
        self.eval_batches = []
        if corpus.meta["splits"]["heldout"]["tokens"] > 0:
            heldout = InstanceStream(corpus, "heldout", cfg.max_len, nsp=cfg.nsp, short_seq_prob=cfg.short_seq_prob,
                                     seed=cfg.seed + 1, shuffle=False)
            items = heldout.first(cfg.eval_instances)
            gen = torch.Generator().manual_seed(cfg.seed + 2)  # the same masks at every evaluation
            for i in range(0, len(items), cfg.eval_batch_size):
                self.eval_batches.append(self._masked(items[i:i + cfg.eval_batch_size], gen))

    def _masked(self, instances, gen: torch.Generator) -> dict[str, torch.Tensor]:
        batch = {k: torch.from_numpy(v) for k, v in collate(instances, self.pad_id).items()}
        ids = batch["input_ids"]
        special = torch.isin(ids, self.special_ids) | (batch["attention_mask"] == 0)
        starts = self.word_starts(ids) if self.word_starts is not None else None
        batch["input_ids"], batch["labels"] = mask_tokens(
            ids, special, mask_id=self.mask_id, vocab_size=self.vocab_size, generator=gen, rate=self.cfg.mask_rate,
            word_starts=starts, random_low=self.random_low)
        return batch

    def steps(self, state: dict | None, rank: int, world: int):
        cfg = self.cfg
        micro_size = cfg.batch_size // cfg.accum
        if micro_size % world:
            raise BertkitError(f"batch_size / accum = {micro_size} instances per micro-step does not split "
                               f"evenly over {world} processes")
        per_rank = micro_size // world
        gen = torch.Generator().manual_seed(cfg.seed + 3)
        position = Position()
        if state is not None:
            position = Position(**state["position"])
            gen.set_state(state["mask_rng"])
        it = self.stream(position)
        while True:
            items = []
            for _ in range(cfg.batch_size):
                inst, position = next(it)
                items.append(inst)
            # Masked as one batch, then split: the step's data is the same whatever accum and world are.
            batch = self._masked(items, gen)
            n_masked = int((batch["labels"] != IGNORE_INDEX).sum())
            n_nsp = int((batch["next_sentence_label"] >= 0).sum())
            tokens = int(batch["attention_mask"].sum())
            micro = []
            for m in range(cfg.accum):
                lo = m * micro_size + rank * per_rank
                rows = {k: v[lo:lo + per_rank] for k, v in batch.items()}
                T = int(rows["attention_mask"].sum(1).max())
                T = min(-(-T // 8) * 8, rows["input_ids"].shape[1])
                rows = {k: (v[:, :T] if v.dim() == 2 else v) for k, v in rows.items()}  # drop all-padding columns
                rows["mlm_scale"] = torch.tensor(world / max(n_masked, 1))
                rows["nsp_scale"] = torch.tensor(world / max(n_nsp, 1))
                micro.append(rows)
            yield Step(micro, tokens, {"position": asdict(position), "mask_rng": gen.get_state()})

    def loss(self, model: nn.Module, micro: dict[str, torch.Tensor]):
        labels = micro["labels"]
        masked = labels != IGNORE_INDEX  # (B, T)
        out = model(micro["input_ids"], micro["attention_mask"], micro["token_type_ids"],
                    mlm_mask=masked if self.cfg.sparse_mlm else None)
        mlm_logits, nsp_logits = out if self.cfg.nsp else (out, None)
        if not self.cfg.sparse_mlm:
            mlm_logits = mlm_logits[masked]
        mlm = objectives.mlm_loss(mlm_logits, labels[masked], reduction="sum") * micro["mlm_scale"]
        stats = {"mlm_loss": float(mlm.detach())}
        loss = mlm
        if nsp_logits is not None:
            nsp = objectives.nsp_loss(nsp_logits, micro["next_sentence_label"], reduction="sum") * micro["nsp_scale"]
            stats["nsp_loss"] = float(nsp.detach())
            loss = loss + nsp
        return loss, stats

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if not self.eval_batches:
            return {}
        mlm_sum = mlm_right = mlm_n = nsp_right = nsp_n = 0.0
        for b in self.eval_batches:
            masked = b["labels"] != IGNORE_INDEX
            out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], mlm_mask=masked)
            mlm_logits, nsp_logits = out if self.cfg.nsp else (out, None)
            target = b["labels"][masked]
            mlm_sum += float(objectives.mlm_loss(mlm_logits, target, reduction="sum"))
            mlm_right += float((mlm_logits.argmax(-1) == target).sum())
            mlm_n += len(target)
            if nsp_logits is not None:
                nsp_right += float((nsp_logits.argmax(-1) == b["next_sentence_label"]).sum())
                nsp_n += len(nsp_logits)
        mlm_loss = mlm_sum / max(mlm_n, 1)
        result = {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_right / max(mlm_n, 1),
                  "perplexity": float(torch.exp(torch.tensor(min(mlm_loss, 50.0))))}
        if nsp_n:
            result["nsp_accuracy"] = nsp_right / nsp_n
        return result


def pretrain(data: str | Path, out: str | Path, model_config: BertConfig | None, cfg: PretrainConfig,
             train_cfg: TrainConfig, *, init: str | Path | None = None, resume: bool = False, force: bool = False,
             progress: bool = True) -> dict:
    """Pre-train a new model (or resume one) on a prepared corpus; the final model lands in out/model.
    init: a model directory to start from instead of new weights (continued, domain-adaptive pre-training;
    model_config is then the folder's); its MLM or NSP head is initialised new when it has none, and said so.
    force: resume even if the data or options differ from the run's start (see runs.check_recipe)."""
    corpus = Corpus(data)
    out = Path(out)
    torch.manual_seed(train_cfg.seed)  # the same initial weights in every process and every rerun
    origin = None
    if init is not None:
        from bertkit.hub import hub_origin, resolve_model
        init = resolve_model(init)  # a Hugging Face Hub name: its snapshot in the HF cache
        origin = hub_origin(init)
    model, notes = _initial_model(init, corpus, cfg, progress) if init is not None else (None, [])
    if model is not None:
        model_config = model.config
    vocab = corpus.tokenizer.vocab_size
    if model_config.vocab_size != vocab:
        raise BertkitError(f"the model's vocab_size {model_config.vocab_size} does not match the corpus tokenizer's "
                           f"{vocab} ({data}); build the config with vocab_size={vocab}")
    if model_config.max_position_embeddings < cfg.max_len:
        raise BertkitError(f"max_len {cfg.max_len} exceeds the model's max_position_embeddings "
                           f"{model_config.max_position_embeddings}")
    if model is None:
        model = build_model(model_config, "pretraining" if cfg.nsp else "masked_lm")
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    task = PretrainTask(corpus, cfg)
    recipe = {"data": str(Path(data).resolve()), "pretrain": asdict(cfg)}
    if init is not None:
        recipe["init"] = str(Path(init).resolve())
    start_run(out, "pretrain_config.json", recipe, hub={"init": origin}, resume=resume, force=force)
    result = train(model, task, train_cfg, out, tokenizer=corpus.tokenizer, reading={"max_length": cfg.max_len},
                   resume=resume, progress_bar=progress)
    finish_run(out, task=model.task, base=origin)
    if init is not None:
        result = {**result, "init": str(init), "initialised": notes}
    return result


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout of the model (hidden, attention, heads) to p, for this run only: its config keeps its own."""
    from bertkit.model.bert import Attention
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(module, Attention):
            module.dropout_p = p


def _initial_model(init: str | Path, corpus: Corpus, cfg: PretrainConfig, progress: bool) -> tuple[nn.Module, list]:
    """A pre-trained model to continue from, with the heads pre-training needs, and the loader's notes (heads
    initialised new); its tokenizer must be the corpus's (prepared with `--tokenizer` set to the model's folder)."""
    from bertkit.checkpoint import load_model
    loaded = load_model(init, task="pretraining" if cfg.nsp else "masked_lm")
    if loaded.tokenizer is None:
        raise BertkitError(f"{init} has no tokenizer files")
    if loaded.tokenizer.vocab() != corpus.tokenizer.vocab():
        raise BertkitError(f"{corpus.path} was prepared with another tokenizer than {init}'s; prepare it again with "
                           f"`bertkit prepare ... --tokenizer {init}`")
    if progress:
        for note in loaded.notes:
            print(f"note: {note}")
    model = choose_execution(loaded.model.train(), unpad=True)
    return model, loaded.notes
