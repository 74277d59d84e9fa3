"""`bertkit serve`: the models of model directories behind HTTP, with dynamic batching and a web page.

    bertkit serve runs/sentiment/model ner=runs/ner/model --index runs/emb --port 8000
    curl -s localhost:8000/predict -d '{"inputs": ["a gorgeous, witty film"]}'

Two layers, as the style guide asks:
  worker.py   the predictor side, no web framework: one thread owns torch and runs every model; a batcher takes
              requests from a bounded queue and merges them, across requests, into length-sorted batches up to a
              token budget (a request too large for one batch is split over several).
  app.py      the HTTP layer: FastAPI on uvicorn, the Python ecosystem's standard ASGI stack (OpenAPI at /docs).
              Handlers validate and await the worker's futures, so the event loop stays light.
  clients.py  the routes existing clients speak: Text Embeddings Inference's and OpenAI's /v1/embeddings.
  explain.py  /explain beside the worker: its own thread and model copy, one forward at a time between batches.
  metrics.py  Prometheus metrics (/metrics).
  static/     the web page at `/` (no CDN).
"""

from bertkit.serve.worker import Limits, ModelWorker, Served, load_served

__all__ = ["Limits", "ModelWorker", "Served", "load_served"]
