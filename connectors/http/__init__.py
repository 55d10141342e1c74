"""The HTTP adapter: Lambda's Invoke API, function URLs and the operational routes, served by
uvicorn with httptools (extra ``http``).

- :mod:`.invoke`: the Invoke route and the operational routes (one ASGI callable);
- :mod:`.urls`: function URLs (payload format 2.0, CORS, ``AWS_IAM``);
- :mod:`.sigv4`: SigV4 verification, as AWS does it, against the app's access keys
  (:mod:`streamfn.access_keys`): the Invoke API's and ``AWS_IAM`` URLs' authentication;
- :mod:`.wire`: ASGI plumbing shared by the routes (limits, body reading, request ids);
- :mod:`.server`: uvicorn, bound and stopped by streamfn, refusing to listen beyond loopback
  without access keys unless told to (:func:`check_exposure`);
- :mod:`.openapi`: the OpenAPI document of the routes.
"""

from .._extras import require

require("http", "http", "uvicorn", "httptools")

from .invoke import (  # noqa: E402
    EVENT_PAYLOAD_LIMIT,
    RESPONSE_LIMIT,
    SYNC_PAYLOAD_LIMIT,
    InvokeAPI,
    asgi_app,
)
from .server import check_exposure, serve  # noqa: E402
from .wire import Limits  # noqa: E402

__all__ = [
    "EVENT_PAYLOAD_LIMIT",
    "RESPONSE_LIMIT",
    "SYNC_PAYLOAD_LIMIT",
    "InvokeAPI",
    "Limits",
    "asgi_app",
    "check_exposure",
    "serve",
]
