"""Every template test runs with dummy AWS credentials, and gets the process environment and
``sys.path`` back afterwards: building a template sets its functions' variables in
``os.environ`` and puts their code directories on ``sys.path``, as ``streamfn run`` does."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_process(aws_env: None) -> Iterator[None]:
    environ, path = dict(os.environ), list(sys.path)
    yield
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path


@pytest.fixture
def aws_endpoint(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto as every AWS client's endpoint, through the standard variable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint
