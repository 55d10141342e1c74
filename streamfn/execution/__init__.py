"""Where a handler runs: the worker's event loop, a worker thread, or an execution
environment (a process of its own that behaves as Lambda's: init once, one invocation at a
time, killed and replaced on timeout, crash or running out of memory).

- :mod:`.modes`: which mode a function gets, and why that is the default.
- :mod:`.threads`: the worker threads of ``def`` handlers, which survive a hung handler.
- :mod:`.pool`: a function's environments: cold start, warm reuse, replacement.
- :mod:`.process`: what every environment shares (its process, variables, memory cap).
- :mod:`.python_env` and :mod:`.child`: streamfn's own Python environments, over
  :mod:`.channel`.
- :mod:`.runtime_api`: environments run by any runtime interface client (``awslambdaric``, a
  ``bootstrap``) over the Lambda Runtime API.
- :mod:`.errors`: the platform's error objects (``Runtime.ExitError``, ...).
"""

from .pool import EnvironmentPool, PoolStats
from .runtime_api import Command
from .threads import HandlerThreads

__all__ = ["Command", "EnvironmentPool", "HandlerThreads", "PoolStats"]
