"""One ActiveMQ broker for the whole session: a JVM takes about a second to start it, so tests
share it and keep apart by queue name. Skipped, with the install line, where the Debian
``activemq`` package or Java is missing."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from streamfn.testing.activemq import ActiveMQBroker, activemq_home, java_binary

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def activemq_broker() -> Iterator[ActiveMQBroker]:
    try:
        activemq_home()
        java_binary()
    except FileNotFoundError as exc:
        pytest.skip(f"ActiveMQ is not installed here ({exc}); run scripts/setup")
    with ActiveMQBroker() as broker:
        log.warning("ActiveMQ started in %.2f s on port %d", broker.startup_seconds, broker.port)
        yield broker
