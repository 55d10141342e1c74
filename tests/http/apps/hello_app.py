"""A minimal app for the CLI tests: ``streamfn run tests/http/apps/hello_app.py:app``."""

from __future__ import annotations

import logging
from typing import Any

from streamfn import App, Context

app = App("hello")
log = logging.getLogger("hello")


@app.function()
async def hello(event: Any, context: Context) -> dict[str, str]:
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    log.info("greeting %s", name)
    print(f"printed {name}")
    return {"message": f"hello {name}", "requestId": context.aws_request_id}


app.publish_version("hello")
app.alias("hello", "live", version="1")


@app.function()
async def boom(event: Any, context: Context) -> None:
    raise ValueError("boom")
