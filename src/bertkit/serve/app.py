"""The HTTP layer: FastAPI (OpenAPI at /docs) over the model worker. Handlers check a request, hand it to the
worker and await its future; no model code runs on the event loop.

Errors follow text-embeddings-inference: a JSON body {"error": "...", "error_type": "..."} and the status says
whose fault it is: 413 too large (payload, inputs), 422 a request the models cannot take (empty, malformed, too
long for a model without windows), 429 queue full (Retry-After), 503 shutting down or an /explain over its time
limit, 500 a model error (logged, never a traceback in the body; 424 on TEI's routes, as TEI), 401 without the
--api-key when one is set.

No client can stall the server: a request whose client hangs up is dropped from the worker's queue (handlers watch
the connection while they wait), /explain runs beside the worker within its own budget (explain.py), bodies are
capped per route, and a request still unanswered when the shutdown grace period ends gets 503 JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from bertkit.errors import BertkitError
from bertkit.serve.clients import add_client_routes, tei_info
from bertkit.serve.errors import ServeError
from bertkit.serve.explain import Explainer, Left, OverBudget, explain_answer
from bertkit.serve.metrics import Metrics
from bertkit.serve.worker import Job, Limits, ModelWorker, Overloaded, Served, Stopped, TooLong

STATIC = Path(__file__).parent / "static"


def error_response(status: int, error_type: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware around every route: counts every request (metrics), answers 503 while draining, caps the
    body per route (by Content-Length, and as it arrives for a chunked body), and answers 503 JSON to a request the
    server cancels at the end of its shutdown grace period (uvicorn would send a plain-text 500)."""

    def __init__(self, app, state, metrics: Metrics, caps: dict[str, tuple[int, str]], default: tuple[int, str]):
        self.app, self.state, self.metrics, self.caps, self.default = app, state, metrics, caps, default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path, status = time.perf_counter(), scope["path"], None

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        max_bytes, option = self.caps.get(path, self.default)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise HTTPException(413, f"the request body is over the limit of {max_bytes:,} bytes ({option})")
            return message

        length = dict(scope["headers"]).get(b"content-length", b"")
        try:
            if self.state.draining and path != "/metrics":
                await reply(sending, 503, "unavailable", "the server is shutting down")
            elif length.isdigit() and int(length) > max_bytes:
                await reply(sending, 413, "payload_too_large", f"the request body has {int(length):,} bytes; the "
                            f"limit is {max_bytes:,} ({option})")
            else:
                await self.app(scope, limited, sending)
        except asyncio.CancelledError:  # the grace period is over: an answer, not a dropped connection
            if status is not None:  # half an answer sent: nothing better than closing
                raise
            await reply(sending, 503, "unavailable", "the server stopped before this request was answered")
        finally:
            self.metrics.observe_request(path, status or 499, time.perf_counter() - start)


class ApiKey:
    """ASGI middleware: every route but /health answers 401 JSON unless the request carries `Authorization: Bearer
    KEY` (TEI's --api-key; the openai client and huggingface_hub's send their key this way)."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/health" or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)  # OPTIONS: a CORS preflight never carries credentials
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        await reply(send, 401, "unauthorized", "a valid API key is needed: send 'Authorization: Bearer KEY' "
                    "(the server's --api-key)", {b"www-authenticate": b"Bearer"})


async def reply(send, status: int, error_type: str, message: str, headers: dict | None = None) -> None:
    """An error answer sent on the raw ASGI channel (no app below to render it)."""
    body = JSONResponse({"error": message, "error_type": error_type}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or {}).items()]})
    await send({"type": "http.response.body", "body": body})


# ---- request bodies ---------------------------------------------------------------------------------------------

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(Strict):
    model: str | None = Field(None, description="a served model's name (default: the first)")
    inputs: str | list[str] | None = Field(None, description="texts (classification, tagging, fill-mask)")
    pairs: list[str] | None = Field(None, description="the second text of each input (sentence-pair models)")
    questions: list[str] | None = Field(None, description="question answering: the questions")
    contexts: list[str] | None = Field(None, description="question answering: the context of each question")
    top_k: int = Field(5, ge=1, le=100, description="fill-mask: fillers per [MASK]")


class EmbedRequest(Strict):
    model: str | None = None
    inputs: str | list[str]


class SimilarRequest(Strict):
    query: str | list[str]
    k: int = Field(10, ge=1, le=1000)


class ExplainRequest(Strict):
    model: str | None = None
    text: str
    pair: str | None = None
    methods: list[str] = Field(["ig"], description="ig, gxi, saliency, occlusion, lime, attention")
    target: str | None = Field(None, description="the label to explain (default: the predicted one)")
    faithfulness: bool = False
    steps: int = Field(50, ge=1, le=500, description="integrated-gradients steps")


# ---- the app ----------------------------------------------------------------------------------------------------

def create_app(models: dict[str, Served], limits: Limits | None = None, index=None, api_key: str | None = None,
               cors_origins: list[str] | None = None) -> FastAPI:
    """An app serving `models` (the first is the default). index: (VectorIndex, records, Served) for /similar.
    api_key: needed (as a Bearer token) on every route but /health. cors_origins: the web origins whose pages may
    call the server (CORS), e.g. ["https://app.example.com"]; none by default."""
    limits = limits or Limits()
    metrics = Metrics()
    worker = ModelWorker(limits, metrics.observe_batch)
    explainer = Explainer(worker, limits.explain_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        if any(m.kind == "text-classification" for m in models.values()):
            # explaining imports sklearn and matplotlib (seconds): before the first request, not within its budget
            await asyncio.to_thread(__import__, "bertkit.interpret")
        yield
        app.state.draining = True
        await asyncio.to_thread(worker.stop)  # queued requests finish first
        await asyncio.to_thread(explainer.stop)

    app = FastAPI(title="bertkit serve", lifespan=lifespan,
                  description="BERT models of bertkit model directories: predict, embed, similar, explain.")
    app.state.worker, app.state.metrics, app.state.limits, app.state.draining = worker, metrics, limits, False
    default = (int(limits.max_payload_mb * 2**20), f"--max-payload-mb {limits.max_payload_mb:g}")
    caps = {"/explain": (int(limits.explain_payload_kb * 2**10), f"--explain-payload-kb {limits.explain_payload_kb:g}")}
    if api_key is not None:  # inside Guard, so a refused request is counted and capped like any other
        app.add_middleware(ApiKey, key=api_key)
    app.add_middleware(Guard, state=app.state, metrics=metrics, caps=caps, default=default)
    if cors_origins:  # outermost: it answers preflights itself and adds its headers to every answer, 401 included
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"])

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, e: ServeError):
        return error_response(e.status, e.error_type, str(e), e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors()[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(422, "validation", "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(e.status_code, "http")
        return error_response(e.status_code, kind, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, e: ClientDisconnect):  # nobody to answer; counted as 499
        return error_response(499, "client_closed", "the client closed the connection")

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):  # logged by the server; the client hears no details
        return error_response(500, "backend", "the model failed on this request; see the server log")

    def served(name: str | None) -> Served:
        if name is None:
            return next(iter(models.values()))
        if name not in models:
            raise ServeError(422, "validation", f"no model named {name!r}; served: {', '.join(models)}")
        return models[name]

    def texts(value, what: str = "inputs") -> list[str]:
        items = [value] if isinstance(value, str) else list(value or [])
        if not items:
            raise ServeError(422, "empty", f"{what} is empty")
        if len(items) > limits.max_inputs:
            raise ServeError(413, "too_many_inputs", f"{len(items)} {what}; at most {limits.max_inputs} in one "
                             "request (--max-inputs)")
        for i, t in enumerate(items):
            if not t.strip():
                raise ServeError(422, "empty", f"{what}[{i}] is empty")
        return items

    async def run(job: Job, request: Request, submit=worker.submit, tei: bool = False):
        """The job's result, or its error as an answer. While it waits, the connection is watched: a client that
        hangs up (or a cancelled request) cancels the job, so its work never reaches the model. tei: an input too
        long is refused in TEI's words."""
        try:
            waiting = asyncio.wrap_future(submit(job))
        except Overloaded as e:
            raise ServeError(429, "overloaded", str(e), {"Retry-After": "1"}) from None
        except Stopped as e:
            raise ServeError(503, "unavailable", str(e)) from None
        try:
            while not (await asyncio.wait({waiting}, timeout=0.1))[0]:
                if await request.is_disconnected():
                    job.cancel()
                    raise ServeError(499, "client_closed", "the client closed the connection")
            return waiting.result()
        except asyncio.CancelledError:
            job.cancel()
            raise
        except TooLong as e:
            message = (f"Input validation error: `inputs` must have less than {e.limit} tokens. Given: {e.tokens}"
                       if tei else str(e))
            raise ServeError(422, "validation", message) from None
        except BertkitError as e:
            raise ServeError(422, "validation", str(e)) from None
        except OverBudget:
            raise ServeError(503, "timeout", f"the explanation ran past its limit of {limits.explain_timeout_s:g} s "
                             "(--explain-timeout-s); try a shorter text, fewer steps or methods") from None
        except Left:
            raise ServeError(499, "client_closed", "the client closed the connection") from None
        except Exception:  # the worker logged it; the client hears no details
            raise ServeError(500, "backend", "the model failed on this request; see the server log") from None

    async def predict(req: PredictRequest, request: Request):
        """bertkit's /predict: labels, entities, answers or masked words, as pipeline(...) gives them."""
        m = served(req.model)
        kind = m.kind
        if kind == "question-answering":
            qs, cs = texts(req.questions, "questions"), texts(req.contexts, "contexts")
            if len(qs) != len(cs):
                raise ServeError(422, "validation", f"{len(qs)} questions but {len(cs)} contexts")
            job = Job(m, "qa", list(zip(qs, cs)))
        elif kind == "feature-extraction":
            raise ServeError(422, "validation", f"model {m.name!r} has no task head; use /embed")
        else:
            xs = texts(req.inputs)
            pairs = None
            if req.pairs is not None:
                if kind != "text-classification":
                    raise ServeError(422, "validation", "pairs are for sentence-pair classifiers")
                pairs = texts(req.pairs, "pairs")
                if len(pairs) != len(xs):
                    raise ServeError(422, "validation", f"{len(xs)} inputs but {len(pairs)} pairs")
            op = {"text-classification": "classify", "token-classification": "tag", "fill-mask": "fill"}[kind]
            options = (("top_k", req.top_k),) if op == "fill" else ()
            job = Job(m, op, [(x, pairs[i] if pairs else None) for i, x in enumerate(xs)], options)
        return {"model": m.name, "predictions": await run(job, request)}

    async def embed(req: EmbedRequest, request: Request):
        """bertkit's /embed: sentence vectors, pooled (and normalised) as the model was saved to."""
        m = served(req.model)
        return {"model": m.name, "embeddings": await run(Job(m, "embed", [(x,) for x in texts(req.inputs)]), request)}

    add_client_routes(app, models, limits, run, texts, {"/predict": (predict, PredictRequest),
                                                        "/embed": (embed, EmbedRequest)})

    @app.post("/similar", summary="nearest texts of the embeddings index (--index)")
    async def similar(req: SimilarRequest, request: Request):
        if index is None:
            raise ServeError(422, "validation", "no embeddings index is served; start with --index DIR")
        vectors, records, m = index
        queries = texts(req.query, "query")
        embedded = await run(Job(m, "embed", [(q,) for q in queries]), request)
        scores, ids = vectors.search(embedded, req.k)
        results = [[{"row": int(i), "score": round(float(s), 6),
                     **{k: v for k, v in records[i].items() if k != "row"}}
                    for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores.tolist(), ids.tolist())]
        return {"model": m.name, "results": results}

    @app.post("/explain", summary="word attributions of a classifier's output (and attention rollout)")
    async def explain(req: ExplainRequest, request: Request):
        m = served(req.model)
        if m.kind != "text-classification":
            raise ServeError(422, "validation", f"model {m.name!r} is a {m.kind} model; /explain needs a "
                             "text classifier")
        text = texts(req.text, "text")[0]
        pair = texts(req.pair, "pair")[0] if req.pair is not None else None
        words = len(text.split()) + len((pair or "").split())
        if words > limits.explain_max_words:
            raise ServeError(413, "too_long", f"the text has {words:,} words; /explain takes at most "
                             f"{limits.explain_max_words:,} (--explain-max-words)")
        if not m.predictor.reading.window_stride or pair is not None:  # truncation would explain part of it
            await run(Job(m, "classify", [(text, pair)]), request)  # refuses a text too long, naming the limit
        job = Job(m, call=lambda p: explain_answer(p, text, pair, methods=req.methods, target=req.target,
                                                   faithfulness=req.faithfulness, steps=req.steps))
        return {"model": m.name, **await run(job, request, explainer.submit)}

    @app.get("/health")
    async def health():
        if not worker.alive:
            raise ServeError(503, "unavailable", "the model worker is not running")
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return {**tei_info(next(iter(models.values())), limits),  # TEI's fields, of the model POST / serves
                "models": [m.info() for m in models.values()], "limits": limits.to_dict(),
                "index": None if index is None else {"rows": len(index[0]), "model": index[2].name},
                "batching": dict(worker.stats)}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(worker.depth()), media_type=metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def load_index(folder: str | Path, models: dict[str, Served], precision: str = "fp32"):
    """(VectorIndex, records, Served) of a `bertkit embed` directory; its model is one served, or loaded."""
    from bertkit.embeddings import build_index, load_embeddings
    from bertkit.inference import Embedder
    vectors, records, meta = load_embeddings(folder)
    source = Path(meta["model"]).resolve()
    m = next((s for s in models.values() if s.folder.resolve() == source and isinstance(s.predictor, Embedder)),
             None)
    if m is None:
        p = Embedder.load(source, precision=precision, pooling=meta["pooling"], max_length=meta["max_length"],
                          normalize=True)
        m = Served(f"{Path(folder).name}-encoder", source, p)
    return build_index(vectors), records, m
