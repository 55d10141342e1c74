"""The app the OpenAPI conformance run drives: well-behaved functions, so any 5xx is the
adapter's fault."""

from __future__ import annotations

from typing import Any

from streamfn import App, Context
from streamfn.config import Cors, FunctionUrl

app = App("openapi", async_time_scale=0.001)


@app.function(url=FunctionUrl(cors=Cors(allow_origins=["*"], allow_methods=["*"])))
async def echo(event: Any, context: Context) -> Any:
    return event


@app.function(name="fn", reserved_concurrency=2)
async def fn(event: Any, context: Context) -> dict[str, Any]:
    return {"event": event}


app.publish_version("fn")
app.alias("fn", "live", version="1")
