"""The Helm chart: lint, strict schema validation of several value sets (built-in kinds
with kubernetes-validate, the prometheus-operator and cert-manager kinds with their CRD
schemas), the chart's own values schema, the rules it enforces (SQLite only with one
replica and no autoscaling), its security posture, scheduling and network policies,
monitoring, certificates, the migrations Job, and the committed plain manifests."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.tools import (
    CHART,
    CI_VALUES,
    ROOT,
    SERVICES,
    find,
    helm,
    kubernetes_validate,
    render,
    render_text,
    template_args,
)

VALUE_SETS = {"default": [], **{p.stem: [p] for p in sorted(CI_VALUES.glob("*.yaml"))}}
CRD_SCHEMAS = Path(__file__).parent / "crd_schemas"
ALERTS = ROOT / "deploy" / "monitoring" / "alerts.yaml"


def crd_validator(obj: dict[str, Any]) -> jsonschema.Draft7Validator | None:
    """The strict validator of a custom resource's kind (tests/deploy/crd_schemas: the
    CRDs' openAPIV3Schema with closed objects), or None for a built-in kind."""
    group, _, version = obj["apiVersion"].rpartition("/")
    if "." not in group or group.endswith(".k8s.io"):  # core, apps, batch, networking.k8s.io …
        return None
    path = CRD_SCHEMAS / f"{obj['kind'].lower()}-{group.split('.')[0]}-{version}.json"
    assert path.exists(), f"no schema for {obj['kind']} {obj['apiVersion']}"
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


def merged_values(files: list[Path]) -> dict[str, Any]:
    """values.yaml with value files deep-merged over it (as helm does)."""
    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
        return over
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in files:
        values = merge(values, yaml.safe_load(path.read_text()))
    return values


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The loopwise workloads (Deployments and the feedback StatefulSet) by service."""
    found = {}
    for obj in objects:
        component = obj["metadata"]["labels"].get("app.kubernetes.io/component")
        if obj["kind"] in ("Deployment", "StatefulSet") and component in SERVICES:
            found[component] = obj
    return found


def test_value_sets_cover_the_required_cases() -> None:
    """default (TLS on, the migrations Job), an explicit TLS set, an external Cassandra,
    >1 replica, monitoring, cert-manager, image digests, scheduling options."""
    assert {"default", "tls-on", "external-cassandra", "replicas", "monitoring", "cert-manager",
            "digests", "scheduling", "in-cluster-cassandra", "sqlite", "console"} <= set(VALUE_SETS)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint(name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VALUE_SETS[name]:
        args += ["-f", str(path)]
    done = helm(*args, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_every_value_set_validates_strictly(tmp_path: Path) -> None:
    """helm template | kubernetes-validate --strict for the built-in kinds of every value
    set, the custom resources (ServiceMonitor, PrometheusRule, Certificate) against their
    CRD schemas with closed objects; a copy with an unknown field must fail each, so the
    checks are known to bite."""
    files, custom = {}, {}
    for name, values in VALUE_SETS.items():
        docs = [d for d in yaml.safe_load_all(render_text(values)) if d]
        custom[name] = [d for d in docs if crd_validator(d)]
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump_all([d for d in docs if not crd_validator(d)], sort_keys=False))
    bad = tmp_path / "misspelt.yaml"
    misspelt = [d for d in yaml.safe_load_all(files["default"].read_text()) if d]
    next(d for d in misspelt if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "imagePulPolicy"] = "Always"
    bad.write_text(yaml.safe_dump_all(misspelt, sort_keys=False))
    done = kubernetes_validate(*files.values(), bad)
    lines = (done.stdout + done.stderr).splitlines()
    for name, path in files.items():
        objects = [d for d in yaml.safe_load_all(path.read_text()) if d]
        passed = [line for line in lines if f"{path} passed" in line]
        failed = [line for line in lines if str(path) in line and "passed" not in line]
        assert not failed, f"{name}: {failed}"
        assert len(passed) == len(objects), f"{name}: {len(passed)} of {len(objects)} validated"
    bad_lines = [line for line in lines if str(bad) in line and "did not validate" in line]
    assert len(bad_lines) == 1 and "imagePulPolicy" in bad_lines[0]

    kinds = set()
    for name, objects in custom.items():
        for obj in objects:
            errors = [e.message for e in crd_validator(obj).iter_errors(obj)]
            assert not errors, f"{name}: {obj['kind']} {obj['metadata']['name']}: {errors}"
            kinds.add(obj["kind"])
    assert kinds == {"ServiceMonitor", "PrometheusRule", "Certificate"}
    for obj in (custom["monitoring"][0], custom["cert-manager"][0]):
        misspelt = {**obj, "spec": {**obj["spec"], "selectr": {}}}
        assert any("selectr" in e.message for e in crd_validator(obj).iter_errors(misspelt))


@pytest.mark.parametrize("sets, message", [
    ({"decision.autoscalling.enabled": "true"}, "additional properties 'autoscalling' not allowed"),
    ({"decision.replicas": "abc"}, "at '/decision/replicas': got string, want integer"),
    ({"monitoring.serviceMonitor.enabeld": "true"}, "additional properties 'enabeld' not allowed"),
    ({"decision.image.digest": "sha256:abc"}, "/decision/image/digest"),
    ({"scheduling.podAntiAffinity": "sometimes"}, "/scheduling/podAntiAffinity"),
    ({"tls.certManager.issuerRef.kind": "Vault"}, "/tls/certManager/issuerRef/kind"),
])
def test_values_schema_refuses_misspelt_keys_and_wrong_types(sets: dict[str, Any], message: str) -> None:
    """values.schema.json closes every object and types every value: both helm template
    and helm lint fail, naming the key."""
    done = helm(*template_args(sets=sets), check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    lint = ["lint", "--strict", str(CHART)]
    for key, value in sets.items():
        lint += ["--set", f"{key}={value}"]
    done = helm(*lint, check=False)
    assert done.returncode != 0 and message in done.stdout + done.stderr
    assert "1 chart(s) failed" in done.stdout + done.stderr


def _schema_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if sub.get("type") == "object" and sub.get("additionalProperties") is False and key != "resources":
            assert "properties" in sub, path
            yield from _schema_paths(sub, path)
        else:
            yield path


def _value_paths(node: Any, schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False and key != "resources":
            yield from _value_paths(value, sub, path)
        else:
            yield path


def test_values_schema_matches_values_yaml() -> None:
    """Every object of the schema is closed, and the schema and values.yaml name the same
    keys: a value added to one without the other fails here."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False

    def closed(node: dict[str, Any], path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, sub in node["properties"].items():
                closed(sub, f"{path}.{key}")
    closed(schema, "")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(_value_paths(values, schema)) == set(_schema_paths(schema))
    jsonschema.Draft7Validator(schema).validate(values)
    for path in CI_VALUES.glob("*.yaml"):
        jsonschema.Draft7Validator(schema).validate(merged_values([path]))


@pytest.mark.parametrize("sets, message", [
    ({"decision.replicas": 2}, "decision.replicas is 2"),
    ({"feedback.replicas": 3}, "feedback.replicas is 3"),
    ({"decision.autoscaling.enabled": "true"}, "set decision.autoscaling.enabled=false"),
    ({"feedback.autoscaling.enabled": "true"}, "set feedback.autoscaling.enabled=false"),
    ({"decision.workers": 2}, "decision.workers=1"),
])
def test_sqlite_refuses_more_than_one_replica_or_autoscaling(sets: dict[str, Any], message: str) -> None:
    done = helm(*template_args([CI_VALUES / "sqlite.yaml"], sets), check=False)
    assert done.returncode != 0
    assert message in done.stderr and "store.type=sqlite" in done.stderr


def test_sqlite_trial_renders_one_replica_each_on_volumes() -> None:
    objects = render([CI_VALUES / "sqlite.yaml"])
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    for name, workload in workloads(objects).items():
        assert workload["spec"]["replicas"] == 1, name
        env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env[f"LOOPWISE_{name.upper()}_STORE_URL"]["value"] == f"sqlite:////var/lib/loopwise/{name}.db"
        if workload["kind"] == "Deployment":
            assert workload["spec"]["strategy"]["type"] == "Recreate"
            volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"lw-loopwise-{name}-data"
            find(objects, "PersistentVolumeClaim", f"lw-loopwise-{name}-data")


def test_bad_store_type_is_refused() -> None:
    done = helm(*template_args(sets={"store.type": "postgres"}), check=False)
    assert done.returncode != 0 and "at '/store/type': value must be one of 'cassandra', 'sqlite'" in done.stderr


def test_secure_mode_needs_its_secrets() -> None:
    done = helm(*template_args(sets={"auth.tokensSecret": ""}), check=False)
    assert done.returncode != 0 and "auth.tokensSecret" in done.stderr


def test_workloads_are_hardened_probed_and_sized() -> None:
    """Non-root, read-only root filesystem, no capabilities, gRPC probes on Health (the
    plaintext health port with TLS on), resources, and a grace period longer than the
    services' own."""
    for value_set, probe_port in ((VALUE_SETS["default"], "health"), (VALUE_SETS["sqlite"], "grpc")):
        objects = render(value_set)
        config = find(objects, "ConfigMap", "lw-loopwise-config")["data"]
        found = workloads(objects)
        assert set(found) == set(SERVICES)
        assert found["feedback"]["kind"] == "StatefulSet"
        for name, workload in found.items():
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            assert pod["automountServiceAccountToken"] is False
            assert pod["serviceAccountName"] == "lw-loopwise"
            (container,) = pod["containers"]
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["command"] == ["python", "-m", f"loopwise.services.{name}"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == ports[probe_port], (name, probe)
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["limits"]["memory"]
            assert pod["terminationGracePeriodSeconds"] > float(config["LOOPWISE_GRACE_PERIOD_S"])
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["data"] == config["LOOPWISE_DATA_DIR"] and mounts["tmp"] == "/tmp"


def test_spools_autoscaling_and_disruption_budgets() -> None:
    objects = render()
    found = workloads(objects)
    # Decision pods are stateless: their decision-log spool is an emptyDir.
    decision_volumes = {v["name"]: v for v in found["decision"]["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in decision_volumes["data"]
    assert "replicas" not in found["decision"]["spec"]  # the HPA owns the count
    # Feedback keeps its spool on a persistent volume per replica.
    feedback = found["feedback"]["spec"]
    assert [t["metadata"]["name"] for t in feedback["volumeClaimTemplates"]] == ["data"]
    assert feedback["serviceName"] == "lw-loopwise-feedback-headless"
    assert find(objects, "Service", "lw-loopwise-feedback-headless")["spec"]["clusterIP"] == "None"
    for name, kind in (("decision", "Deployment"), ("feedback", "StatefulSet")):
        hpa = find(objects, "HorizontalPodAutoscaler", f"lw-loopwise-{name}")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": kind,
                                                 "name": f"lw-loopwise-{name}"}
        pdb = find(objects, "PodDisruptionBudget", f"lw-loopwise-{name}")
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == name
    for name in ("trainer", "evaluator"):
        assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"
                    and o["metadata"]["name"] == f"lw-loopwise-{name}"]
    replicas = workloads(render([CI_VALUES / "replicas.yaml"]))
    assert replicas["decision"]["spec"]["replicas"] == 4
    assert replicas["feedback"]["spec"]["replicas"] == 3


def test_decision_headless_service_names_every_ready_pod() -> None:
    """Clients spread calls over the decision pods through
    dns:///<fullname>-decision-headless.<namespace>.svc:<port> (docs/operations.md)."""
    for values in ([], [CI_VALUES / "replicas.yaml"]):
        objects = render(values)
        headless = find(objects, "Service", "lw-loopwise-decision-headless")
        spec = headless["spec"]
        assert spec["clusterIP"] == "None"
        assert not spec.get("publishNotReadyAddresses", False)  # only pods that pass readiness
        pod_labels = workloads(objects)["decision"]["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"].items() <= pod_labels.items()
        assert spec["selector"] == find(objects, "Service", "lw-loopwise-decision")["spec"]["selector"]
        assert spec["ports"] == [{"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP",
                                  "appProtocol": "grpc"}]
        assert headless["metadata"]["labels"]["app.kubernetes.io/component"] == "decision"


def _peers(rule: dict[str, Any]) -> list[str]:
    return [p["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "client")
            for p in rule.get("from", rule.get("to", [])) if "podSelector" in p]


def test_network_policies_deny_by_default_and_allow_the_loop() -> None:
    objects = render()
    deny = find(objects, "NetworkPolicy", "lw-loopwise-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    ports = {"decision": 50051, "feedback": 50052, "trainer": 50053, "evaluator": 50054}
    expected_calls = {"decision": {"feedback", "trainer"}, "feedback": {"decision", "trainer"},
                      "trainer": {"feedback", "decision"},
                      "evaluator": {"feedback", "decision", "trainer"}}
    for name in SERVICES:
        spec = find(objects, "NetworkPolicy", f"lw-loopwise-{name}")["spec"]
        grpc_in = [r for r in spec["ingress"] if r["ports"][0]["port"] == ports[name]]
        (rule,) = grpc_in
        callers = {c for c, targets in expected_calls.items() if name in targets}
        assert set(_peers(rule)) == callers | {"client"}, name
        egress_to = {}
        for rule in spec["egress"]:
            for port in rule["ports"]:
                egress_to.setdefault(port["port"], []).extend(_peers(rule))
        assert 53 in egress_to  # DNS
        assert 9042 in egress_to  # the store
        for target in expected_calls[name]:
            assert egress_to[ports[target]] == [target], (name, target)
        for other in set(SERVICES) - expected_calls[name] - {name}:
            assert ports[other] not in egress_to, (name, other)
    # An external Cassandra's address range narrows the CQL egress rule.
    narrowed = render([CI_VALUES / "external-cassandra.yaml"])
    egress = find(narrowed, "NetworkPolicy", "lw-loopwise-decision")["spec"]["egress"]
    cql = [r for r in egress if r["ports"][0]["port"] == 9142]
    assert cql and cql[0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


def test_store_url_lives_in_a_secret() -> None:
    objects = render(sets={"store.cassandra.url": "cassandra://user:s3cret@db:9042/lw"})
    assert "s3cret" not in yaml.safe_dump(find(objects, "ConfigMap", "lw-loopwise-config"))
    assert find(objects, "Secret", "lw-loopwise-store")["stringData"]["url"] == "cassandra://user:s3cret@db:9042/lw"
    external = render([CI_VALUES / "external-cassandra.yaml"])
    assert not [o for o in external if o["kind"] == "Secret"]
    for workload in workloads(external).values():
        env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
        refs = [e["valueFrom"]["secretKeyRef"] for n, e in env.items() if n.endswith("_STORE_URL")]
        assert refs == [{"name": "loopwise-cassandra-url", "key": "url"}]
    in_cluster = render([CI_VALUES / "in-cluster-cassandra.yaml"])
    find(in_cluster, "StatefulSet", "lw-loopwise-cassandra")
    url = find(in_cluster, "Secret", "lw-loopwise-store")["stringData"]["url"]
    assert url.startswith("cassandra://lw-loopwise-cassandra:9042/loopwise")


def test_tls_settings_follow_the_mode() -> None:
    secure = find(render([CI_VALUES / "tls-on.yaml"]), "ConfigMap", "lw-loopwise-config")["data"]
    assert secure["LOOPWISE_ALLOW_PLAINTEXT"] == "false"
    assert secure["LOOPWISE_TLS_CERT_FILE"] == "/etc/loopwise/tls/tls.crt"
    assert secure["LOOPWISE_HEALTH_PORT"] == "8090"
    assert secure["LOOPWISE_TOKENS_FILE"] == "/etc/loopwise/auth/tokens.yaml"
    objects = render([CI_VALUES / "tls-on.yaml"])
    for name, workload in workloads(objects).items():
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"loopwise-prod-tls-{name}"
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["LOOPWISE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "loopwise-prod-service-tokens", "key": name}
        pii = env.get("LOOPWISE_PII_HASH_KEY", {}).get("valueFrom", {}).get("secretKeyRef")
        expected = {"name": "loopwise-pii-key", "key": "key"} if name in ("decision", "feedback") else None
        assert pii == expected, name
    plain = find(render([CI_VALUES / "sqlite.yaml"]), "ConfigMap", "lw-loopwise-config")["data"]
    assert plain["LOOPWISE_ALLOW_PLAINTEXT"] == "true"
    assert not [k for k in plain if k.startswith("LOOPWISE_TLS_")]


def hooks(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``helm test`` hooks by kind."""
    return {o["kind"]: o for o in objects
            if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_test_hook_runs_the_smoke_test_as_a_hardened_client(name: str) -> None:
    """Every value set renders the ``helm test`` pod: python -m loopwise.smoke from the
    decision image with the release's settings, the TLS client certificate and the test's
    token (TLS on), hardened and sized like the services, re-created on each run and
    removed when it passed; a hook NetworkPolicy lets it reach the four gRPC ports, and
    the services admit it as a client."""
    objects = render(VALUE_SETS[name])
    values = merged_values(VALUE_SETS[name])
    tls = values["tls"]["enabled"]
    found = hooks(objects)
    assert set(found) == {"Pod", "NetworkPolicy"}, name
    pod = found["Pod"]
    assert pod["metadata"]["name"] == "lw-loopwise-smoke-test"
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    labels = pod["metadata"]["labels"]
    assert labels["loopwise.io/client"] == "true"
    assert labels["app.kubernetes.io/component"] == "smoke-test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    (container,) = spec["containers"]
    digest = values["decision"]["image"]["digest"]
    assert container["image"] == (f"{values['image']['repository']}/decision@{digest}" if digest
                                  else f"{values['image']['repository']}/decision:0.1.0")
    assert container["command"] == ["python", "-m", "loopwise.smoke", "--use-case", "loopwise_smoke",
                                    "--timeout", "10"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert container["envFrom"] == [{"configMapRef": {"name": "lw-loopwise-config"}}]
    env = {e["name"]: e for e in container.get("env", [])}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    if tls:
        config = find(objects, "ConfigMap", "lw-loopwise-config")["data"]
        assert env["LOOPWISE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": values["helmTest"]["tokenSecret"], "key": "token"}
        assert mounts["tls"]["readOnly"] is True
        assert config["LOOPWISE_TLS_CERT_FILE"] == mounts["tls"]["mountPath"] + "/tls.crt"
        assert config["LOOPWISE_TLS_CA_FILE"] == mounts["tls"]["mountPath"] + "/ca.crt"
        secret = values["tls"]["secretName"] + ("-client" if values["tls"]["perServiceSecrets"] else "")
        assert volumes["tls"]["secret"]["secretName"] == secret
    else:
        assert "LOOPWISE_TOKEN" not in env and "tls" not in mounts and "tls" not in volumes
    policy = found["NetworkPolicy"]
    assert policy["metadata"]["annotations"]["helm.sh/hook-weight"] == "-1"  # before the pod
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "smoke-test"
    assert "ingress" not in policy["spec"]
    egress = {r["ports"][0]["port"]: _peers(r) for r in policy["spec"]["egress"]}
    assert egress.pop(53) == []  # DNS
    assert {port: peers for port, peers in egress.items() if port in range(50051, 50055)} == {
        50051: ["decision"], 50052: ["feedback"], 50053: ["trainer"], 50054: ["evaluator"]}
    for service in SERVICES:
        ingress = find(objects, "NetworkPolicy", f"lw-loopwise-{service}")["spec"]["ingress"]
        assert any({"podSelector": {"matchLabels": {"loopwise.io/client": "true"}}} in r["from"]
                   for r in ingress), service


def test_helm_test_hook_options() -> None:
    assert not hooks(render(sets={"helmTest.enabled": "false"}))
    pod = hooks(render(sets={"helmTest.useCase": "smoke_b", "helmTest.timeout": 30,
                             "helmTest.tlsSecret": "ops-client-tls",
                             "helmTest.tokenSecret": "ops-smoke-token"}))["Pod"]
    (container,) = pod["spec"]["containers"]
    assert container["command"][3:] == ["--use-case", "smoke_b", "--timeout", "30"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "ops-client-tls"
    env = {e["name"]: e for e in container["env"]}
    assert env["LOOPWISE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ops-smoke-token"
    done = helm(*template_args(sets={"helmTest.tokenSecret": ""}), check=False)
    assert done.returncode != 0 and "helmTest.tokenSecret" in done.stderr
    # Without tokens (TLS off) the test needs no token Secret.
    assert hooks(render([CI_VALUES / "sqlite.yaml"], {"helmTest.tokenSecret": ""}))


def test_rendered_manifests_match_the_chart() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "render_manifests.sh"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    # The helm test hook is left out: kubectl apply would run it before the services are up.
    for path in (ROOT / "deploy" / "k8s" / "manifests").glob("*.yaml"):
        assert "helm.sh/hook" not in path.read_text(), path
    # Without the hook Job the services of the plain manifests migrate when they start.
    default = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "manifests" / "loopwise.yaml").read_text())
    config = next(d for d in default if d and d["kind"] == "ConfigMap")["data"]
    assert "LOOPWISE_STORE_MIGRATE_ON_START" not in config


def _leaves(node: Any, prefix: str = "") -> Iterator[str]:
    """Key paths of values.yaml down to the documented level (maps the chart passes
    through whole — resources, security contexts, config — are one value)."""
    whole = {"resources", "podSecurityContext", "securityContext", "config", "podAnnotations",
             "nodeSelector", "podLabels", "labels"}
    if isinstance(node, dict) and node and prefix.rsplit(".", 1)[-1] not in whole:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), flags=re.MULTILINE))
    paths = {re.sub(r"^(decision|feedback|trainer|evaluator)\.", "<service>.", p) for p in _leaves(values)}
    assert len(paths) > 50
    assert not paths - documented, f"undocumented values: {sorted(paths - documented)}"
    assert not documented - paths, f"documented values that do not exist: {sorted(documented - paths)}"


def _console(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The web console's objects by kind."""
    return {o["kind"]: o for o in objects
            if o["metadata"]["labels"].get("app.kubernetes.io/component") == "console"}


def test_console_is_off_by_default() -> None:
    objects = render()
    assert not _console(objects)
    for name in SERVICES:
        ingress = find(objects, "NetworkPolicy", f"lw-loopwise-{name}")["spec"]["ingress"]
        assert "console" not in {p for rule in ingress for p in _peers(rule)}, name


def test_console_deployment_is_hardened_probed_and_reaches_only_the_services() -> None:
    """ci/console.yaml: the console runs python -m loopwise.console non-root on a read-only
    root filesystem with no capabilities, HTTP probes on /healthz, resources, its client
    certificate and session key from Secrets and no token of its own; its NetworkPolicy
    admits the ingress peer on its port only and lets it reach DNS and the four gRPC
    ports, whose policies admit it."""
    values = yaml.safe_load((CI_VALUES / "console.yaml").read_text())["console"]
    objects = render([CI_VALUES / "console.yaml"])
    found = _console(objects)
    assert set(found) == {"Deployment", "Service", "NetworkPolicy"}
    deployment = found["Deployment"]
    assert deployment["metadata"]["name"] == "lw-loopwise-console"
    assert deployment["spec"]["replicas"] == values["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "loopwise/console:0.1.0"
    assert container["command"] == ["python", "-m", "loopwise.console"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8090}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert container["envFrom"] == [{"configMapRef": {"name": "lw-loopwise-config"}}]
    env = {e["name"]: e for e in container["env"]}
    assert "LOOPWISE_TOKEN" not in env  # every call carries the user's token
    assert env["LOOPWISE_CONSOLE_HOST"]["value"] == "0.0.0.0"
    assert env["LOOPWISE_CONSOLE_PORT"]["value"] == "8090"
    assert env["LOOPWISE_CONSOLE_SECURE_COOKIES"]["value"] == "true"
    assert env["LOOPWISE_CONSOLE_SESSION_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": values["sessionKeySecret"], "key": "key"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = find(objects, "ConfigMap", "lw-loopwise-config")["data"]
    assert mounts["tmp"]["mountPath"] == "/tmp" and config["MPLCONFIGDIR"].startswith("/tmp/")
    assert mounts["tls"]["readOnly"] is True
    assert config["LOOPWISE_TLS_CERT_FILE"] == mounts["tls"]["mountPath"] + "/tls.crt"
    assert volumes["tls"]["secret"]["secretName"] == values["tlsSecret"]
    service = found["Service"]["spec"]
    assert service["ports"] == [{"name": "http", "port": 8090, "targetPort": "http", "protocol": "TCP",
                                 "appProtocol": "http"}]
    assert service["selector"]["app.kubernetes.io/component"] == "console"
    policy = found["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "console"
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": 8090, "protocol": "TCP"}]
    assert ingress["from"] == values["networkPolicy"]["ingressFrom"]
    egress = {r["ports"][0]["port"]: _peers(r) for r in policy["egress"]}
    assert egress == {53: [], 50051: ["decision"], 50052: ["feedback"], 50053: ["trainer"],
                      50054: ["evaluator"]}
    for name in SERVICES:
        rules = find(objects, "NetworkPolicy", f"lw-loopwise-{name}")["spec"]["ingress"]
        grpc_rule = next(r for r in rules if r["ports"][0]["port"] == egress_port(name))
        assert "console" in _peers(grpc_rule), name


def egress_port(name: str) -> int:
    return {"decision": 50051, "feedback": 50052, "trainer": 50053, "evaluator": 50054}[name]


def test_console_options_and_what_it_refuses() -> None:
    done = helm(*template_args(sets={"console.enabled": "true", "console.replicas": 2}), check=False)
    assert done.returncode != 0 and "console.sessionKeySecret" in done.stderr
    # One replica: a random session key per pod; the certificate Secret follows tls.*.
    single = _console(render(sets={"console.enabled": "true"}))
    pod = single["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert "LOOPWISE_CONSOLE_SESSION_KEY" not in env
    assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"] == "loopwise-tls"
    per_service = _console(render(sets={"console.enabled": "true", "tls.perServiceSecrets": "true"}))
    volumes = {v["name"]: v for v in per_service["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "loopwise-tls-client"
    # No ingress peer: nothing reaches it.
    closed = _console(render(sets={"console.enabled": "true", "console.networkPolicy.ingressFrom": "null"}))
    assert closed["NetworkPolicy"]["spec"]["ingress"] == []
    # A plaintext trial: no certificate to mount.
    trial = _console(render([CI_VALUES / "sqlite.yaml"], {"console.enabled": "true"}))
    pod = trial["Deployment"]["spec"]["template"]["spec"]
    assert "tls" not in {v["name"] for v in pod["volumes"]}
    assert "tls" not in {m["name"] for m in pod["containers"][0]["volumeMounts"]}


def test_alert_rules_have_one_source_and_render_as_a_prometheus_rule() -> None:
    """deploy/monitoring/alerts.yaml is a link to the chart's files/alerts.yaml (no second
    copy); the PrometheusRule carries its groups, every alert with a description and an
    absolute runbook_url (runbookBaseUrl + a docs/operations.md anchor that exists), and
    the service-down rule selects targets by the pods' part-of label, not a job name."""
    assert ALERTS.is_symlink()
    assert ALERTS.resolve() == (CHART / "files" / "alerts.yaml").resolve()
    assert os.readlink(ALERTS) == "../k8s/helm/loopwise/files/alerts.yaml"  # relative: survives a clone
    source = yaml.safe_load(ALERTS.read_text())
    values = yaml.safe_load((CI_VALUES / "monitoring.yaml").read_text())["monitoring"]
    objects = render([CI_VALUES / "monitoring.yaml"])
    rule = find(objects, "PrometheusRule", "lw-loopwise")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = rule["spec"]["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in source["groups"]]
    operations = (ROOT / "docs" / "operations.md").read_text()
    base = values["prometheusRule"]["runbookBaseUrl"]
    rendered = {r["alert"]: r for g in groups for r in g["rules"]}
    for group in source["groups"]:
        for alert in group["rules"]:
            out = rendered[alert["alert"]]
            assert out["expr"] == alert["expr"] and out["labels"] == alert["labels"]
            assert out["annotations"]["summary"] == alert["annotations"]["summary"]
            assert out["annotations"]["description"] == alert["annotations"]["description"]
            url = out["annotations"]["runbook_url"]
            assert url == base + alert["annotations"]["runbook_url"]
            anchor = url.rpartition("#")[2]
            assert url.startswith(base + "docs/operations.md#") and f'<a id="{anchor}"></a>' in operations
            assert "job=" not in out["expr"], alert["alert"]
    assert 'app_kubernetes_io_part_of="loopwise"' in rendered["LoopwiseServiceDown"]["expr"]
    # Without runbookBaseUrl the link stays the repository path.
    plain = find(render(sets={"monitoring.prometheusRule.enabled": "true"}), "PrometheusRule", "lw-loopwise")
    assert plain["spec"]["groups"][0]["rules"][0]["annotations"]["runbook_url"] == "docs/operations.md#service-down"


def test_service_monitor_scrapes_the_metrics_ports_with_the_labels_the_rules_use() -> None:
    objects = render([CI_VALUES / "monitoring.yaml"])
    monitor = find(objects, "ServiceMonitor", "lw-loopwise")
    spec = monitor["spec"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert spec["namespaceSelector"] == {"matchNames": ["loopwise"]}
    assert spec["podTargetLabels"] == ["app.kubernetes.io/part-of", "app.kubernetes.io/component"]
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    (expression,) = spec["selector"]["matchExpressions"]
    assert expression["values"] == list(SERVICES)
    # The Services it selects are the four services', each with a `metrics` port, and
    # their pods carry the part-of label the service-down rule selects on.
    selected = [o for o in objects if o["kind"] == "Service"
                and spec["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()
                and o["metadata"]["labels"].get("app.kubernetes.io/component") in expression["values"]]
    with_metrics = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in selected
                    if "metrics" in {p["name"] for p in o["spec"]["ports"]}}
    assert with_metrics == set(SERVICES)
    for name, workload in workloads(objects).items():
        assert workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "loopwise", name
    assert not [o for o in render() if o["kind"] in ("ServiceMonitor", "PrometheusRule")]  # off by default
    done = helm(*template_args(sets={"monitoring.serviceMonitor.enabled": "true", "metrics.enabled": "false"}),
                check=False)
    assert done.returncode != 0 and "needs metrics.enabled" in done.stderr


def test_pods_spread_and_avoid_each_other_by_default() -> None:
    """Every service (and the console) gets soft anti-affinity on the host and
    ScheduleAnyway spreads over zones and hosts, selecting its own pods."""
    objects = render([CI_VALUES / "console.yaml"])
    pods = {name: w["spec"]["template"]["spec"] for name, w in workloads(objects).items()}
    pods["console"] = find(objects, "Deployment", "lw-loopwise-console")["spec"]["template"]["spec"]
    for name, pod in pods.items():
        selector = {"app.kubernetes.io/name": "loopwise", "app.kubernetes.io/instance": "lw",
                    "app.kubernetes.io/component": name}
        (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": selector}}, name
        spread = pod["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" and c["maxSkew"] == 1
                   and c["labelSelector"]["matchLabels"] == selector for c in spread), name
        assert "priorityClassName" not in pod
    off = render(sets={"scheduling.podAntiAffinity": "none", "scheduling.topologySpread.enabled": "false"})
    for name, workload in workloads(off).items():
        pod = workload["spec"]["template"]["spec"]
        assert "affinity" not in pod and "topologySpreadConstraints" not in pod, name


def test_scheduling_labels_and_per_service_overrides() -> None:
    values = yaml.safe_load((CI_VALUES / "scheduling.yaml").read_text())
    found = workloads(render([CI_VALUES / "scheduling.yaml"]))
    for name, workload in found.items():
        template = workload["spec"]["template"]
        pod, labels = template["spec"], template["metadata"]["labels"]
        assert labels["team"] == "decisioning" and labels["app.kubernetes.io/component"] == name
        assert pod["priorityClassName"] == ("loopwise-serving" if name == "decision" else "loopwise-critical")
        affinity = pod["affinity"]["podAntiAffinity"]
        assert list(affinity) == ["requiredDuringSchedulingIgnoredDuringExecution"], name
        (container,) = pod["containers"]
        if name == "decision":
            assert labels["tier"] == "serving"
            assert pod["securityContext"]["runAsUser"] == 20001
            assert pod["securityContext"]["runAsNonRoot"] is True  # the global keys stay
            assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["resources"] == values["decision"]["resources"]
        else:
            assert "tier" not in labels and pod["securityContext"]["runAsUser"] == 10001
            assert "seccompProfile" not in container["securityContext"]
    assert found["evaluator"]["spec"]["template"]["spec"]["topologySpreadConstraints"] == \
        values["evaluator"]["topologySpreadConstraints"]
    # The selectors never take the extra labels (they would orphan running pods).
    for workload in found.values():
        assert "team" not in workload["spec"]["selector"]["matchLabels"]


def test_images_by_digest() -> None:
    values = yaml.safe_load((CI_VALUES / "digests.yaml").read_text())
    objects = render([CI_VALUES / "digests.yaml"])
    repository = values["image"]["repository"]
    for name, workload in workloads(objects).items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"{repository}/{name}@{values[name]['image']['digest']}", name
    console = find(objects, "Deployment", "lw-loopwise-console")["spec"]["template"]["spec"]["containers"][0]
    assert console["image"] == f"{repository}/console@{values['console']['image']['digest']}"
    job = find(objects, "Job", "lw-loopwise-migrations")["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == f"{repository}/decision@{values['decision']['image']['digest']}"
    # Tags otherwise; one digest changes one image only.
    mixed = workloads(render(sets={"trainer.image.digest": values["trainer"]["image"]["digest"]}))
    assert mixed["trainer"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(values["trainer"]["image"]["digest"])
    assert mixed["decision"]["spec"]["template"]["spec"]["containers"][0]["image"] == "loopwise/decision:0.1.0"


def test_cert_manager_issues_the_secrets_the_pods_mount() -> None:
    """With tls.certManager one Certificate per service Secret (and the clients' one),
    naming every host name the service is dialled by, for server and client auth, from
    the configured issuer; without it, no Certificate (the operator's Secrets)."""
    values = yaml.safe_load((CI_VALUES / "cert-manager.yaml").read_text())["tls"]
    objects = render([CI_VALUES / "cert-manager.yaml"])
    certificates = {o["spec"]["secretName"]: o["spec"] for o in objects if o["kind"] == "Certificate"}
    assert set(certificates) == {f"loopwise-tls-{s}" for s in SERVICES} | {"loopwise-tls-client"}
    for name, workload in workloads(objects).items():
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        spec = certificates[volumes["tls"]["secret"]["secretName"]]
        assert spec["issuerRef"] == {"name": "loopwise-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["privateKey"]["algorithm"] == "RSA"
        hosts = {f"lw-loopwise-{name}", f"lw-loopwise-{name}.loopwise.svc", values["serverName"],
                 "loopwise.example.com"}
        if name in ("decision", "feedback"):
            hosts.add(f"lw-loopwise-{name}-headless.loopwise.svc")
        assert hosts <= set(spec["dnsNames"]), name
    smoke = hooks(objects)["Pod"]["spec"]["volumes"]
    assert {v["name"]: v for v in smoke}["tls"]["secret"]["secretName"] == "loopwise-tls-client"
    single = [o for o in render(sets={"tls.certManager.enabled": "true", "tls.certManager.issuerRef.name": "ca"})
              if o["kind"] == "Certificate"]
    assert [c["spec"]["secretName"] for c in single] == ["loopwise-tls"]
    assert {"lw-loopwise-trainer", "lw-loopwise-decision-headless"} <= set(single[0]["spec"]["dnsNames"])
    assert not [o for o in render() if o["kind"] == "Certificate"]
    done = helm(*template_args(sets={"tls.certManager.enabled": "true"}), check=False)
    assert done.returncode != 0 and "tls.certManager.issuerRef.name" in done.stderr
    done = helm(*template_args([CI_VALUES / "sqlite.yaml"], {"tls.certManager.enabled": "true"}), check=False)
    assert done.returncode != 0 and "needs tls.enabled" in done.stderr


def test_in_cluster_cassandra_is_pinned_and_probed() -> None:
    values = yaml.safe_load((CI_VALUES / "in-cluster-cassandra.yaml").read_text())
    objects = render([CI_VALUES / "in-cluster-cassandra.yaml"])
    (container,) = find(objects, "StatefulSet", "lw-loopwise-cassandra")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"cassandra@{values['store']['cassandra']['inCluster']['image']['digest']}"
    assert container["readinessProbe"]["exec"]["command"][0] == "cqlsh"
    assert container["livenessProbe"]["tcpSocket"]["port"] == "cql"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 300
    tagged = find(render(sets={"store.cassandra.inCluster.enabled": "true", "tls.enabled": "false"}),
                  "StatefulSet", "lw-loopwise-cassandra")["spec"]["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"cassandra:\d+\.\d+\.\d+", tagged["image"])  # a patch release, not a floating tag


def _migrations(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects
            if o["metadata"]["labels"].get("app.kubernetes.io/component") == "migrations"}


def test_migrations_run_in_a_pre_install_and_pre_upgrade_job() -> None:
    """With an existing Cassandra the chart applies the schema migrations in a hook Job
    (the decision image, python -m loopwise.store.migrate, every service's store URL) and
    tells the services not to migrate; the Job reads a hook copy of the chart's store
    Secret (the release's own objects do not exist yet) or the operator's Secret, and a
    hook NetworkPolicy lets it reach DNS and the store only."""
    objects = render()
    found = _migrations(objects)
    assert set(found) == {"Job", "Secret", "NetworkPolicy"}
    for obj in found.values():
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    weights = {kind: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for kind, o in found.items()}
    assert weights["Secret"] < weights["Job"] and weights["NetworkPolicy"] < weights["Job"]
    assert find(objects, "ConfigMap", "lw-loopwise-config")["data"]["LOOPWISE_STORE_MIGRATE_ON_START"] == "false"
    job = found["Job"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod  # the release's ServiceAccount comes later
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "loopwise.store.migrate"]
    assert container["image"] == "loopwise/decision:0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "envFrom" not in container  # the ConfigMap does not exist before install
    env = {e["name"]: e for e in container["env"]}
    url = find(objects, "Secret", "lw-loopwise-store")["stringData"]["url"]
    assert found["Secret"]["stringData"]["url"] == url
    for name in SERVICES:
        assert env[f"LOOPWISE_{name.upper()}_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "lw-loopwise-migrations-store", "key": "url"}
    policy = found["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "migrations"
    assert "ingress" not in policy
    assert sorted(r["ports"][0]["port"] for r in policy["egress"]) == [53, 9042]
    # The operator's Secret: read directly; the narrowed CQL peers apply.
    external = _migrations(render([CI_VALUES / "external-cassandra.yaml"]))
    assert set(external) == {"Job", "NetworkPolicy"}
    env = external["Job"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e} == {"loopwise-cassandra-url"}
    cql = [r for r in external["NetworkPolicy"]["spec"]["egress"] if r["ports"][0]["port"] == 9142]
    assert cql[0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    # No Job where the store cannot exist before install, or when turned off: the
    # services migrate on start.
    for values, sets in (([CI_VALUES / "sqlite.yaml"], {}), ([CI_VALUES / "in-cluster-cassandra.yaml"], {}),
                         ([], {"migrations.job.enabled": "false"})):
        objects = render(values, sets)
        assert not _migrations(objects), (values, sets)
        assert "LOOPWISE_STORE_MIGRATE_ON_START" not in find(objects, "ConfigMap", "lw-loopwise-config")["data"]
