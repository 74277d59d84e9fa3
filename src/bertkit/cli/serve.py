"""`bertkit serve`: model directories behind HTTP (see bertkit.serve)."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from bertkit.cli.common import add_device
from bertkit.cli.options import given
from bertkit.errors import BertkitError
from bertkit.options import Range

LIMITS = ["max_batch_tokens", "max_wait_ms", "max_queue", "max_inputs", "max_payload_mb", "explain_payload_kb",
          "explain_max_words", "explain_timeout_s", "grace_s", "threads"]


def register(verbs) -> None:
    from bertkit.model.precision import PRECISIONS
    from bertkit.cli.options import add_fields
    from bertkit.serve.worker import Limits
    sv = verbs.add_parser("serve", help="an HTTP server (JSON API, web page) with dynamic batching")
    sv.add_argument("models", nargs="+", metavar="MODEL_DIR", help="model directories, or NAME=DIR; a model is "
                    "named after its folder; the first is the default")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    sv.add_argument("--port", type=Range(int, 0, 65535), default=8000, help="default 8000")
    sv.add_argument("--precision", default="fp32", choices=PRECISIONS, help="inference precision: bf16 (CPU with "
                    "bf16 instructions, GPU) or int8 (CPU) run faster (default fp32)")
    add_device(sv)
    add_fields(sv, Limits, LIMITS)
    sv.add_argument("--index", metavar="EMB_DIR", help="a `bertkit embed` directory to serve /similar from")
    sv.add_argument("--api-key", metavar="KEY", help="every route but /health needs 'Authorization: Bearer KEY' "
                    "(401 without it); also read from BERTKIT_API_KEY, which keeps it out of the process list")
    sv.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="a web origin whose pages may call the "
                    "server, e.g. https://app.example.com (repeatable; '*' any); none by default")
    sv.set_defaults(func=serve)


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise BertkitError(f"port {port} on {host} is in use; pick another with --port") from None
            raise BertkitError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn
        from bertkit.serve.app import create_app, load_index
    except ImportError as e:
        raise BertkitError(f"serving needs {e.name}: pip install 'bertkit[serve]'") from None
    from bertkit.hardware import resolve_device
    from bertkit.serve.worker import Limits, load_served
    check_port(args.host, args.port)
    api_key = args.api_key if args.api_key is not None else os.environ.get("BERTKIT_API_KEY")
    if api_key is not None and not api_key.strip():
        raise BertkitError("--api-key is empty")
    limits = Limits(**given(args, Limits, LIMITS))
    models = load_served(args.models, args.precision)
    for m in models.values():
        for note in m.predictor.notes:
            print(f"note: {m.name}: {note}", file=sys.stderr)
    index = load_index(args.index, models, args.precision) if args.index else None
    app = create_app(models, limits, index, api_key=api_key, cors_origins=args.cors_origin)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # SIGTERM/SIGINT: new requests get 503, in-flight ones finish
            app.state.draining = True
            super().handle_exit(sig, frame)

    print(f"serving {', '.join(f'{m.name} ({m.kind})' for m in models.values())} at http://{args.host}:{args.port}"
          f" on {resolve_device(precision=args.precision)} with {limits.threads or 'adaptive'} threads",
          file=sys.stderr, flush=True)
    Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                          timeout_graceful_shutdown=limits.grace_s)
           ).run()
