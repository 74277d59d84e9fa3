"""Hugging Face Hub names wherever a model folder is accepted: `bert-base-uncased`, `org/name`, `org/name@revision`.

A local path that exists always wins. Anything else that is a valid Hub repo id is fetched with huggingface_hub
into the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE; HF_HUB_OFFLINE=1 reads the cache only; HF_TOKEN for a
private repo, used by huggingface_hub and never printed or saved by bertkit), and the snapshot folder it lands in
is the model folder. Only the files a BERT needs come down: config, one weights file (safetensors, else a
pytorch_model.bin, loaded with weights_only), tokenizer files and a sentence-transformers model's modules.

Before anything is downloaded the repo's config and file list are checked (one API call), so a RoBERTa, a repo
with only TensorFlow weights, a typo or a missing revision is one line and leaves nothing in the cache.
The tokenizer verbs take a Hub name too and fetch only its tokenizer files (`resolve_tokenizer`).
`hub_origin` reads the name and commit back from a snapshot folder's path, for the run configs and model cards
that record where a model came from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bertkit.errors import BertkitError

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
"""A BERT's weights as bertkit reads them, in the order it prefers them."""
TOKENIZER_FILES = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
"""A tokenizer's files; all that a tokenizer verb fetches (`tokenizer encode`, `prepare --tokenizer`)."""
FILES = ["config.json", *TOKENIZER_FILES, "modules.json", "sentence_bert_config.json",
         "config_sentence_transformers.json", "[0-9]_*/*.json", "[0-9]_*/model.safetensors",
         "[0-9]_*/pytorch_model.bin"]
"""What else is fetched: config, tokenizer, and a sentence-transformers model's modules (1_Pooling, 2_Dense, ...)."""
_SNAPSHOT = re.compile(r"models--(?P<repo>[^/\\]+)[/\\]snapshots[/\\](?P<commit>[0-9a-f]{40})")


def is_hub_name(name: str) -> bool:
    """Whether name could be a Hub model (`name`, `org/name`, optionally `@revision`) and is not a path that exists."""
    repo, at, revision = name.partition("@")
    if (at and not revision) or repo.startswith((".", "~")) or "\\" in repo or _exists(name):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # only now: a local folder needs none
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return False
    return True


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except OSError:  # a name too long for the file system is no folder here
        return False


def resolve_model(name_or_path: str | Path) -> Path:
    """The local folder of a model: the path itself when it exists (or is no Hub name: the loader then says what is
    missing), else the Hub model's snapshot in the Hugging Face cache, downloaded if need be."""
    if not isinstance(name_or_path, (str, os.PathLike)):  # pipeline(None), pipeline(3): one line, not a TypeError
        raise BertkitError(f"a model directory is a path (str or Path), got {type(name_or_path).__name__} "
                           f"{name_or_path!r}")
    if not isinstance(name_or_path, str) or not is_hub_name(name_or_path):
        return Path(name_or_path)
    repo, _, revision = name_or_path.partition("@")
    folder = _snapshot(repo, revision or None, name_or_path)
    _check_bert(folder / "config.json", name_or_path)
    if not any((folder / w).is_file() for w in WEIGHTS):
        raise BertkitError(f"{name_or_path}: the cached copy ({folder}) has no {' or '.join(WEIGHTS)}; "
                           "its download did not finish: run again online")
    return folder


def resolve_tokenizer(name_or_path: str | Path) -> Path:
    """The local folder of a tokenizer: the path itself when it exists (or is no Hub name), else the Hub model's
    tokenizer files (TOKENIZER_FILES only, not its weights) in the Hugging Face cache, downloaded if need be."""
    if not isinstance(name_or_path, str) or not is_hub_name(name_or_path):
        return Path(name_or_path)
    repo, _, revision = name_or_path.partition("@")
    folder = _snapshot(repo, revision or None, name_or_path, tokenizer_only=True)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES[:2]):
        raise BertkitError(f"{name_or_path}: the cached copy ({folder}) has no tokenizer.json or vocab.txt; fetch it "
                           "again online")
    return folder


def hub_origin(folder: str | Path) -> dict | None:
    """{"name": "org/name", "revision": commit} for a snapshot folder of the Hugging Face cache, None for any other
    folder: what a run records so that it can be reproduced."""
    m = _SNAPSHOT.search(str(folder))
    return {"name": m["repo"].replace("--", "/"), "revision": m["commit"]} if m else None


def _snapshot(repo: str, revision: str | None, name: str, tokenizer_only: bool = False) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    if constants.is_offline_mode():
        try:
            return Path(snapshot_download(repo, revision=revision, local_files_only=True))
        except LocalEntryNotFoundError:
            raise BertkitError(f"{name}: no such folder, and it is not in the Hugging Face cache "
                               f"({constants.HF_HUB_CACHE}; HF_HUB_OFFLINE is set): fetch it once online, or give "
                               "a model folder") from None
    files, commit = _checked_online(repo, revision, name, tokenizer_only)
    if files is None:  # the Hub cannot be reached: the cache may still have it
        try:
            return Path(snapshot_download(repo, revision=revision, local_files_only=True))
        except LocalEntryNotFoundError:
            raise BertkitError(f"{name}: no such folder, the Hugging Face Hub cannot be reached and the model is not "
                               f"in the cache ({constants.HF_HUB_CACHE})") from None
    if tokenizer_only:
        return Path(snapshot_download(repo, revision=commit, allow_patterns=TOKENIZER_FILES))
    weights = next(w for w in WEIGHTS if w in files)  # the one file of weights needed, not both
    return Path(snapshot_download(repo, revision=commit, allow_patterns=[weights, *FILES]))


def _checked_online(repo: str, revision: str | None, name: str,
                    tokenizer_only: bool = False) -> tuple[set[str] | None, str | None]:
    """The repo's files and the commit `revision` names, after checking it holds a BERT that bertkit reads (for
    tokenizer_only: a tokenizer.json or vocab.txt, whatever the model); (None, None) when the Hub cannot be reached.
    Nothing is downloaded."""
    import httpx2  # huggingface_hub's HTTP client: its connection errors mean "the Hub cannot be reached"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    try:
        info = HfApi().model_info(repo, revision=revision)
    except GatedRepoError:
        raise BertkitError(f"{name}: a gated model; accept its terms on huggingface.co and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise BertkitError(f"{name}: no such folder, and no such model on the Hugging Face Hub (a private one "
                           "needs HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise BertkitError(f"{name}: the Hugging Face Hub has no revision {revision!r} of {repo}") from None
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            raise BertkitError(f"{name}: the Hugging Face Hub refused access ({status}); a private model needs "
                               "HF_TOKEN") from None
        return None, None  # the Hub is down: try the cache
    except (httpx2.HTTPError, OfflineModeIsEnabled, OSError):
        return None, None
    files = {s.rfilename for s in info.siblings or []}
    if tokenizer_only:
        if not any(f in files for f in TOKENIZER_FILES[:2]):
            raise BertkitError(f"{name}: no tokenizer.json or vocab.txt on the Hub")
        return files, info.sha
    if "config.json" not in files:
        raise BertkitError(f"{name}: no config.json on the Hub; not a transformers model")
    model_type = (info.config or {}).get("model_type")
    if model_type is not None and model_type != "bert":
        raise BertkitError(_not_bert(name, model_type))
    if not any(w in files for w in WEIGHTS):
        others = sorted(f for f in files if f.endswith((".h5", ".msgpack", ".onnx", ".ckpt.index")))
        raise BertkitError(f"{name}: no PyTorch weights ({' or '.join(WEIGHTS)}) on the Hub"
                           + (f", only {', '.join(others)}" if others else "") + "; bertkit reads those two")
    return files, info.sha


def _check_bert(config: Path, name: str) -> None:
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise BertkitError(f"{name}: {config} is missing or not a JSON object") from None
    if model_type != "bert":
        raise BertkitError(_not_bert(name, model_type))


def _not_bert(name: str, model_type) -> str:
    return f"{name} is a {model_type} model; bertkit reads BERT models (model_type 'bert')"
