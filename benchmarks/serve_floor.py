"""The floor of the service benchmark: a bare endpoint under the same server stack, same wrk load.

``POST /v1/track`` and ``/v1/batch`` read the body, parse it as JSON and answer
``{"success": true}``: no key check, no store, no score. Run by ``serve_bench.py`` as::

    python benchmarks/serve_floor.py --port 8099 [--workers 2]

with the same uvicorn settings as ``propensity serve`` (the event loop and HTTP parser uvicorn
picks: uvloop and httptools when installed), so ``service / floor`` is what the service's own
work costs on top of HTTP.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


async def _bare(request: Request) -> Response:
    json.loads(await request.body())
    return Response(b'{"success":true}', media_type="application/json")


app.post("/v1/track")(_bare)
app.post("/v1/batch")(_bare)


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1,
                        help="HTTP worker processes on the one port (what several workers could reach at best)")
    args = parser.parse_args()
    if args.workers > 1:
        uvicorn.run("serve_floor:app", app_dir=str(Path(__file__).parent), workers=args.workers, host="127.0.0.1",
                    port=args.port, log_level="warning", access_log=False)
    else:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
