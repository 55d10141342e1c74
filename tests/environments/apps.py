"""Apps the SIGTERM tests run under ``streamfn run``: one mapping whose handler hangs, in an
execution environment (``ENV_TEST_EXECUTION=environment``) or a worker thread (``thread``).
``ENV_TEST_PARAMS`` is the JSON the hanging handler reads (its log and lock files)."""

from __future__ import annotations

import os

from streamfn import App
from streamfn.testing import MemorySource

from .handlers import sleepy

source = MemorySource()
source.append("p0", os.environ["ENV_TEST_PARAMS"].encode())
app = App("hang")
app.consume(
    source,
    name="hang",
    timeout=900,
    execution=os.environ["ENV_TEST_EXECUTION"],
)(sleepy)
