"""Routes that existing clients speak, beside bertkit's own: Text Embeddings Inference's (TEI) and OpenAI's.

    POST /embed /predict /rerank /tokenize, POST / (by the model's kind), GET /info's TEI fields   TEI's bodies
    POST /v1/embeddings (and /embeddings)                                                         OpenAI's bodies
    POST /models/NAME                                   as POST /, for the model NAME (the Hub's model URLs)

TEI serves one model; bertkit serves several, so each TEI route takes the first served model that can do it
(see `pick`). /embed and /predict are also bertkit's routes: the body decides (`is_tei`). A body with one of TEI's
own fields (truncate, normalize, raw_scores, ...) or with text pairs as lists is TEI's and is answered as TEI
answers (a bare list); any other body is bertkit's, so bertkit clients keep working.

Errors as TEI gives them: {"error", "error_type"}; 400 empty, 413 too large, 422 validation (an input over the
model's max_length with truncate false: TEI's message), 424 the model failed, 429 overloaded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from bertkit.serve.errors import ServeError
from bertkit.serve.worker import Job, Limits, Served


def json_response(content) -> Response:
    """An answer as JSON bytes, written as Starlette's JSONResponse writes them. A handler that returns it skips
    FastAPI's jsonable_encoder, which walks every value of the answer first: a tenth of the event loop's time per
    /predict request (py-spy, one client at a time)."""
    return Response(json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(),
                    media_type="application/json")

TEI_EMBED = {"normalize", "truncate", "truncation_direction", "prompt_name", "dimensions", "parameters"}
TEI_PREDICT = {"truncate", "truncation_direction", "raw_scores", "parameters"}
TEI_STATUS = {"empty": 400, "backend": 424}
"""bertkit's error types whose TEI status differs (bertkit: 422 and 500)."""


class TEIEmbed(BaseModel):  # unknown fields are ignored, as TEI's (serde's) do
    inputs: str | list[str]
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Literal["right", "Right"] = "right"  # bertkit's tokenizer cuts on the right only
    prompt_name: None = None  # sentence-transformers prompts are not read by bertkit
    dimensions: int | None = Field(None, ge=1)


class TEIPredict(BaseModel):
    inputs: str | list[str] | list[list[str]]
    truncate: bool | None = None
    truncation_direction: Literal["right", "Right"] = "right"
    raw_scores: bool = False
    parameters: dict | None = None
    """The Hub's inference API (huggingface_hub.InferenceClient sends it): top_k, function_to_apply."""


class TEIRerank(BaseModel):
    query: str
    texts: list[str]
    truncate: bool | None = None
    truncation_direction: Literal["right", "Right"] = "right"
    raw_scores: bool = False
    return_text: bool = False


class TEITokenize(BaseModel):
    inputs: str | list[str]
    add_special_tokens: bool = True
    prompt_name: None = None


class OpenAIEmbed(BaseModel):
    input: str | list[str]
    model: str | None = None
    user: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


def is_tei(body) -> bool:
    """Whether a /embed or /predict body is TEI's (see the module docstring)."""
    if not isinstance(body, dict):
        return False
    inputs = body.get("inputs")
    return bool(set(body) & (TEI_EMBED | TEI_PREDICT)) or (
        isinstance(inputs, list) and any(isinstance(x, list) for x in inputs))


def parse(body, model: type[BaseModel]):
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


def one_output(m: Served) -> bool:
    """A classifier with one output: TEI's re-ranker (a cross-encoder scoring a (query, text) pair)."""
    return m.kind == "text-classification" and len(m.predictor.labels) == 1


def scores(row: list[float], m: Served, raw: bool) -> list[float]:
    """TEI's scores from logits: raw, or a sigmoid for one output or a multi-label model, else a softmax."""
    if raw:
        return row
    if len(row) == 1 or m.predictor.problem_type == "multi_label":
        return [1 / (1 + math.exp(-x)) for x in row]
    top = max(row)
    e = [math.exp(x - top) for x in row]
    return [x / sum(e) for x in e]


def model_type(m: Served) -> dict | None:
    """/info's model_type as TEI writes it."""
    if m.kind == "text-classification":
        labels = m.predictor.labels
        value = {"id2label": {str(i): n for i, n in enumerate(labels)},
                 "label2id": {n: i for i, n in enumerate(labels)}}
        return {"reranker" if one_output(m) else "classifier": value}
    if m.kind == "feature-extraction":
        return {"embedding": {"pooling": m.predictor.reading.pooling}}
    return None


def tei_info(m: Served, limits: Limits) -> dict:
    """TEI's /info fields for the model POST / serves."""
    from bertkit import __version__
    dtype = str(next(m.predictor.model.parameters()).dtype).removeprefix("torch.")
    return {"model_id": m.name, "model_sha": None, "model_dtype": dtype, "served_model_name": m.name,
            "model_type": model_type(m), "max_concurrent_requests": limits.max_queue,
            "max_input_length": m.predictor.reading.max_length, "max_batch_tokens": limits.max_batch_tokens,
            "max_batch_requests": None, "max_client_batch_size": limits.max_inputs, "auto_truncate": False,
            "tokenization_workers": 1, "version": __version__, "sha": None, "docker_label": None}


def add_client_routes(app: FastAPI, models: dict[str, Served], limits: Limits, run, texts, bertkit_routes) -> None:
    """Add the TEI and OpenAI routes. run, texts: create_app's (a job's answer; a checked list of inputs);
    bertkit_routes: {"/embed": (handler, body model), "/predict": ...}: bertkit's handlers, for the bodies that
    are not TEI's."""

    def pick(route: str) -> Served:
        """The model a TEI route uses: /predict the first classifier; /rerank the first one-output classifier
        (a cross-encoder), else the first encoder (cosine similarity); /embed the first encoder, else the default
        model (any model embeds)."""
        ms = list(models.values())
        if route == "/predict":
            found = [m for m in ms if m.kind == "text-classification"]
        elif route == "/rerank":
            found = [m for m in ms if one_output(m)] or [m for m in ms if m.kind == "feature-extraction"]
        else:
            found = [m for m in ms if m.kind == "feature-extraction"] or ms
        if not found:
            need = "a text classifier" if route == "/predict" else "a one-output classifier or an encoder"
            raise ServeError(424, "backend", f"{route} needs {need}; none is served")
        return found[0]

    async def answer(job: Job, request: Request):
        """run(), with TEI's statuses and its message for an input too long."""
        try:
            return await run(job, request, tei=True)
        except ServeError as e:
            raise ServeError(TEI_STATUS.get(e.error_type, e.status), e.error_type, str(e), e.headers) from None

    def checked(value, what: str = "inputs") -> list[str]:
        try:
            return texts(value, what)
        except ServeError as e:
            raise ServeError(TEI_STATUS.get(e.error_type, e.status), e.error_type, str(e), e.headers) from None

    async def vectors(m: Served, xs: list[str], request: Request, normalize: bool, truncate: bool,
                      dimensions: int | None = None) -> tuple[list[list[float]], int]:
        """Embeddings of xs (cut to `dimensions`, TEI's Matryoshka option) and the tokens read."""
        job = Job(m, "embed", [(x,) for x in xs], (("normalize", normalize and dimensions is None),
                                                   ("truncate", truncate)))
        out = await answer(job, request)
        if dimensions is not None:
            if dimensions > len(out[0]):
                raise ServeError(422, "validation", f"dimensions is {dimensions}; model {m.name!r} gives "
                                 f"{len(out[0])}-wide vectors")
            v = np.asarray(out, dtype=np.float32)[:, :dimensions]
            if normalize:
                v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            out = v.tolist()
        return out, job.tokens

    async def tei_embed(body, request: Request, m: Served | None = None):
        req = parse(body, TEIEmbed)
        out, _ = await vectors(m or pick("/embed"), checked(req.inputs), request, req.normalize, bool(req.truncate),
                               req.dimensions)
        return out

    async def tei_predict(body, request: Request, m: Served | None = None):
        req = parse(body, TEIPredict)
        m = m or pick("/predict")
        if m.kind != "text-classification":
            raise ServeError(424, "backend", f"model {m.name!r} is a {m.kind} model, not a classifier")
        # TEI's reading: "a" or ["a"] is a text, ["a", "b"] a pair, [["a"], ["b", "c"]] a batch of them
        single = not (isinstance(req.inputs, list) and req.inputs and isinstance(req.inputs[0], list))
        items = [req.inputs] if single else list(req.inputs)
        seqs = []
        for i, x in enumerate(items):
            x = [x] if isinstance(x, str) else x
            if len(x) not in (1, 2) or not all(isinstance(t, str) for t in x):
                raise ServeError(422, "validation", f"inputs{'' if single else f'[{i}]'}: a text or a pair "
                                 "[text, text]; a batch is a list of them")
            seqs.append((x[0], x[1] if len(x) == 2 else None))
        checked([s[0] for s in seqs])
        pairs = [s[1] for s in seqs if s[1] is not None]
        if pairs and len(pairs) != len(seqs):
            raise ServeError(422, "validation", "inputs mix texts and pairs; send them in separate requests")
        if pairs:
            checked(pairs, "pairs")
        options = (("logits", True), ("truncate", bool(req.truncate)))
        rows = await answer(Job(m, "classify", seqs, options), request)
        params = req.parameters or {}
        top_k = params.get("top_k")
        if top_k is not None and (type(top_k) is not int or top_k < 1):
            raise ServeError(422, "validation", f"parameters.top_k must be a whole number of at least 1, got {top_k!r}")
        raw = req.raw_scores or params.get("function_to_apply") == "none"
        out = []
        for row in rows:
            ranked = sorted(({"label": n, "score": s} for n, s in zip(m.predictor.labels, scores(row, m, raw))),
                            key=lambda p: -p["score"])
            out.append(ranked[:top_k] if top_k else ranked)
        # TEI: one input (a string) -> a list; a batch -> a list of lists. The Hub's API (a body with
        # "parameters") answers a list of lists always: InferenceClient.text_classification reads [0] of it.
        return out[0] if single and req.parameters is None else out

    async def tei_rerank(body, request: Request):
        req = parse(body, TEIRerank)
        m = pick("/rerank")
        if not req.texts:
            raise ServeError(400, "empty", "`texts` cannot be empty")
        xs = checked(req.texts, "texts")
        query = checked(req.query, "query")[0]
        if one_output(m):  # a cross-encoder scores each (query, text) pair
            rows = await answer(Job(m, "classify", [(query, x) for x in xs],
                                    (("logits", True), ("truncate", bool(req.truncate)))), request)
            values = [scores(r, m, req.raw_scores)[0] for r in rows]
        else:  # an encoder: cosine similarity of unit vectors
            vs, _ = await vectors(m, [query, *xs], request, True, bool(req.truncate))
            q = np.asarray(vs[0])
            values = [float(np.dot(q, v)) for v in vs[1:]]
        ranks = [{"index": i, **({"text": xs[i]} if req.return_text else {}), "score": s}
                 for i, s in enumerate(values)]
        return sorted(ranks, key=lambda r: -r["score"])

    async def post_model(m: Served, request: Request):
        """POST / as TEI routes it: by the model's kind."""
        body = await body_of(request)
        if one_output(m):
            return await tei_rerank(body, request)
        if m.kind == "text-classification":
            return await tei_predict(body, request, m)
        if m.kind == "feature-extraction":
            return await tei_embed(body, request, m)
        raise ServeError(422, "validation", f"model {m.name!r} is a {m.kind} model; POST /predict with bertkit's "
                         "body serves it")

    async def body_of(request: Request):
        try:
            return await request.json()
        except ValueError:
            raise ServeError(422, "validation", "the body is not JSON") from None

    def either(path: str, tei_model: type[BaseModel]) -> dict:
        """OpenAPI: the route takes bertkit's body or TEI's."""
        schemas = [bertkit_routes[path][1].model_json_schema(), tei_model.model_json_schema()]
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": schemas}}}}}

    async def shared(path: str, tei_handler, request: Request):
        """A route both speak: a body with TEI's fields gets TEI's answer, any other bertkit's."""
        body = await body_of(request)
        if is_tei(body):
            return await tei_handler(body, request)
        handler, model = bertkit_routes[path]
        return await handler(parse(body, model), request)

    @app.post("/embed", summary="sentence vectors: TEI's body -> a bare list; bertkit's body -> {model, embeddings}",
              openapi_extra=either("/embed", TEIEmbed))
    async def embed(request: Request):
        return json_response(await shared("/embed", tei_embed, request))

    @app.post("/predict", summary="TEI's body -> [{label, score}] sorted; bertkit's body -> as pipeline(...) gives",
              openapi_extra=either("/predict", TEIPredict))
    async def predict(request: Request):
        return json_response(await shared("/predict", tei_predict, request))

    @app.post("/rerank", summary="TEI: texts ranked against a query (a cross-encoder, else cosine similarity)")
    async def rerank(request: Request):
        return json_response(await tei_rerank(await body_of(request), request))

    @app.post("/tokenize", summary="TEI: the tokens of each input, with their character offsets")
    async def tokenize(request: Request):
        req = parse(await body_of(request), TEITokenize)
        xs = checked(req.inputs)
        tok = pick("/embed").predictor.tokenizer
        encs = await asyncio.to_thread(tok.encode_all, xs, None, truncation=None)
        out = []
        for x, e in zip(xs, encs):
            special = [s is None for s in e.sequence_ids]
            out.append([{"id": i, "text": t if sp else x[a:b], "special": sp, "start": None if sp else a,
                         "stop": None if sp else b}
                        for i, t, (a, b), sp in zip(e.ids, e.tokens, e.offsets, special)
                        if req.add_special_tokens or not sp])
        return out

    @app.post("/", summary="TEI: the default model's route by its kind (embed, predict or rerank)")
    async def root(request: Request):
        return json_response(await post_model(next(iter(models.values())), request))

    @app.post("/models/{name}", summary="as POST /, for the model NAME")
    async def named(name: str, request: Request):
        if name not in models:
            raise ServeError(404, "not_found", f"no model named {name!r}; served: {', '.join(models)}")
        return json_response(await post_model(models[name], request))

    async def openai_embeddings(request: Request):
        req = parse(await body_of(request), OpenAIEmbed)
        m = models[req.model] if req.model in models else pick("/embed")
        out, tokens = await vectors(m, checked(req.input, "input"), request, True, False, req.dimensions)
        if req.encoding_format == "base64":  # little-endian float32 bytes, as OpenAI sends them
            out = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in out]
        return json_response({"object": "list", "data": [{"object": "embedding", "embedding": v, "index": i}
                                                         for i, v in enumerate(out)],
                              "model": m.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    for path in ("/v1/embeddings", "/embeddings"):
        app.post(path, summary="OpenAI's embeddings API")(openai_embeddings)
