"""A real ActiveMQ 5.x broker for tests, started from the Debian ``activemq`` package's files
(``apt-get install activemq``; it needs a Java runtime) on a free loopback port.

The package's own service is never used: :class:`ActiveMQBroker` writes a broker configuration
into a temporary directory (data there too) and runs ``activemq.jar`` from
``/usr/share/activemq`` with it, so tests need no root, leave nothing behind and never meet a
broker someone else configured. The broker has a STOMP connector only, bound to 127.0.0.1; no
JMX, no web console, no persistence (messages live in memory, which is all a test needs), and
with what the ActiveMQ source's tests exercise:

- ``simpleAuthenticationPlugin`` with :attr:`ActiveMQBroker.users` (anonymous access refused)
  and an ``authorizationPlugin`` that lets the ``users`` group use every queue; a user of
  another group (``outsider``) may log in but read nothing;
- a per-queue dead-letter queue, ``DLQ.<queue>`` (``individualDeadLetterStrategy``, for
  non-persistent messages too), instead of the default shared ``ActiveMQ.DLQ``;
- ``timeStampingBrokerPlugin``, so a message's ``timestamp`` is the time it reached the broker.

It starts in about a second (a JVM and Spring), so a suite starts one per session::

    @pytest.fixture(scope="session")
    def activemq_broker() -> Iterator[ActiveMQBroker]:
        with ActiveMQBroker() as broker:
            yield broker
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

from .servers import LocalServer, free_port, wait_for_port

#: Where Debian's ``activemq`` package puts the broker (``bin/activemq.jar``, ``lib/``).
ACTIVEMQ_HOME = "/usr/share/activemq"

#: The users of the test broker: name -> (password, group).
USERS: Mapping[str, tuple[str, str]] = {
    "streamfn": ("streamfn-secret", "users"),
    "outsider": ("outsider-secret", "outsiders"),
}

_CONFIG = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
    http://www.springframework.org/schema/beans/spring-beans.xsd
    http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="streamfn-test"
          useJmx="false" persistent="false" advisorySupport="false" schedulerSupport="false"
          dataDirectory={data}>
    <destinationPolicy>
      <policyMap>
        <policyEntries>
          <policyEntry queue=">">
            <deadLetterStrategy>
              <individualDeadLetterStrategy queuePrefix="DLQ." useQueueForQueueMessages="true"
                                            processNonPersistent="true"/>
            </deadLetterStrategy>
          </policyEntry>
        </policyEntries>
      </policyMap>
    </destinationPolicy>
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users>
{users}
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry queue=">" read="users" write="users" admin="users"/>
            </authorizationEntries>
          </authorizationMap>
        </map>
      </authorizationPlugin>
      <timeStampingBrokerPlugin/>
    </plugins>
    <transportConnectors>
      <transportConnector name="stomp" uri={uri}/>
    </transportConnectors>
  </broker>
</beans>
"""

_LOG4J = """log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=%d %-5p %c{1} - %m%n
"""


def java_binary() -> str:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java`` or the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise FileNotFoundError(
            "no java on PATH: ActiveMQ needs a Java runtime (Debian: default-jre)"
        )
    return found


def activemq_home() -> str:
    """The broker's files; ``STREAMFN_ACTIVEMQ_HOME`` overrides the Debian location."""
    home = os.environ.get("STREAMFN_ACTIVEMQ_HOME", ACTIVEMQ_HOME)
    if not Path(home, "bin", "activemq.jar").is_file():
        raise FileNotFoundError(
            f"no ActiveMQ at {home} (bin/activemq.jar): apt-get install activemq, or set "
            "STREAMFN_ACTIVEMQ_HOME to an unpacked ActiveMQ 5.x"
        )
    return home


class ActiveMQBroker(LocalServer):
    """An ActiveMQ 5.x broker with a STOMP connector on ``127.0.0.1:port`` (see the module
    docstring for its configuration); ``with`` starts and stops it. :attr:`startup_seconds`
    is how long the last start took, until the STOMP port accepted connections."""

    stop_grace = 10.0  # a JVM's shutdown hooks take longer than tansu's exit
    tail_limit = 3000  # a Java stack trace is long

    def __init__(
        self,
        *,
        port: int | None = None,
        users: Mapping[str, tuple[str, str]] = USERS,
        start_timeout: float = 60.0,
        heap: str = "256m",
    ) -> None:
        self.port = port or free_port()
        self.users = dict(users)
        self.start_timeout = start_timeout
        self.heap = heap
        self.startup_seconds = 0.0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        super().__init__()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def credentials(self, user: str = "streamfn") -> tuple[str, str]:
        """(user, password) of one of :attr:`users`."""
        return user, self.users[user][0]

    def _write_config(self, base: Path) -> Path:
        users = "\n".join(
            f"          <authenticationUser username={quoteattr(name)} "
            f"password={quoteattr(password)} groups={quoteattr(group)}/>"
            for name, (password, group) in self.users.items()
        )
        config = base / "activemq.xml"
        config.write_text(
            _CONFIG.format(
                data=quoteattr(str(base / "data")),
                users=users,
                uri=quoteattr(f"stomp://127.0.0.1:{self.port}?transport.closeAsync=false"),
            )
        )
        (base / "log4j.properties").write_text(_LOG4J)
        return config

    def start(self) -> None:
        """Start the broker; returns once its STOMP port accepts connections."""
        home = activemq_home()
        self._dir = tempfile.TemporaryDirectory(prefix="streamfn-activemq-")
        base = Path(self._dir.name)
        config = self._write_config(base)
        began = time.monotonic()
        process = self._launch(
            [
                java_binary(),
                "-Xms64m",
                f"-Xmx{self.heap}",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",  # a short-lived broker: the C1 JIT starts faster
                f"-Dactivemq.home={home}",
                f"-Dactivemq.base={base}",
                f"-Dactivemq.conf={base}",
                f"-Dactivemq.data={base / 'data'}",
                f"-Djava.io.tmpdir={base}",
                f"-Dlog4j.configuration=file:{base / 'log4j.properties'}",
                "-jar",
                str(Path(home, "bin", "activemq.jar")),
                "start",
                f"xbean:file:{config}",
            ],
            cwd=base,
        )
        try:
            wait_for_port(self.port, process, self.start_timeout)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.stderr_tail()
            self.stop()
            raise RuntimeError(f"ActiveMQ did not start: {exc}\n{tail}") from exc
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        super().stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
