"""A minimal app for the CLI tests: ``streamfn run tests/apps/hello_app.py:app``."""

from __future__ import annotations

from typing import Any

from streamfn import App, Context

app = App("hello")


@app.function()
async def hello(event: Any, context: Context) -> dict[str, str]:
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"message": f"hello {name}", "requestId": context.aws_request_id}
