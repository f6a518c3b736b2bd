#!/usr/bin/env python3
"""Checks a kustomize rendering of deploy/kubernetes (base or overlays/dev).

Usage: check.py <layout: base|dev> <rendered.yaml> <repository root>

Validates every object against the Kubernetes schemas (strict: unknown fields refused), then
what the deployment relies on: the groups of contexts and their configuration, probes,
data volume, restricted security context, PodDisruptionBudget and Service of each
StatefulSet, no secret in a ConfigMap, and (base) an Ingress route for every path prefix a
context's plugin serves. Prints each problem and exits 1 if there is any.
"""

import base64
import re
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"
DATA_DIR = "/var/lib/ctxhost"
CONFIG_DIR = "/etc/ctxhost"
PORT = 8080

# The groups of contexts each layout runs, one StatefulSet per group.
LAYOUTS = {
    "base": {"order-payment": ["order", "payment"], "car": ["car"], "view": ["view"]},
    "dev": {"ctxhost": ["order", "payment", "car", "view"]},
}
# The keys each layout's secrets must have (the values are placeholders to replace).
SECRET_KEYS = {
    "base": {"admin-token", "jwks.json", "signing-key", "password"},
    "dev": {"admin-token", "hs256-secret", "signing-key"},
}

problems = []


def problem(msg):
    problems.append(msg)


def get(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return default
        if obj is None:
            return default
    return obj


def selects(selector, labels):
    match = (selector or {}).get("matchLabels") or selector or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def route_prefixes(root, context):
    """First path segments of the routes a context's plugin declares (`route("GET", "/x..")`)."""
    src = (root / "plugins" / context / "src" / "lib.rs").read_text()
    found = {"/" + m for m in re.findall(r'route\("[A-Z]+",\s*"/([^"/{]+)', src)}
    if not found:
        problem(f"plugins/{context}/src/lib.rs: no route found to check the Ingress against")
    return found


def check_probe(name, container, kind, path):
    probe = container.get(kind)
    if not probe:
        problem(f"{name}: no {kind}")
        return
    got = (get(probe, "httpGet", "path"), get(probe, "httpGet", "port"))
    port = got[1]
    if isinstance(port, str):
        port = next(
            (p.get("containerPort") for p in container.get("ports", []) if p.get("name") == port),
            port,
        )
    if got[0] != path or port != PORT:
        problem(f"{name}: {kind} is {got}, not GET {path} on {PORT}")


def check_security(name, pod, container):
    def setting(*path):
        c = get(container, "securityContext", *path)
        return c if c is not None else get(pod, "securityContext", *path)

    if setting("runAsNonRoot") is not True:
        problem(f"{name}: runAsNonRoot is not true")
    uid = setting("runAsUser")
    if not isinstance(uid, int) or uid == 0:
        problem(f"{name}: runAsUser {uid!r} is not a non-root uid")
    if get(container, "securityContext", "readOnlyRootFilesystem") is not True:
        problem(f"{name}: readOnlyRootFilesystem is not true")
    if get(container, "securityContext", "allowPrivilegeEscalation") is not False:
        problem(f"{name}: allowPrivilegeEscalation is not false")
    if get(container, "securityContext", "capabilities", "drop") != ["ALL"]:
        problem(f"{name}: capabilities do not drop ALL")
    if get(container, "securityContext", "capabilities", "add"):
        problem(f"{name}: capabilities are added")
    if setting("seccompProfile", "type") != "RuntimeDefault":
        problem(f"{name}: seccompProfile is not RuntimeDefault")


def check_config(name, toml_text, contexts, layout):
    try:
        cfg = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        problem(f"{name}: ctxhost.toml does not parse: {e}")
        return
    want = {"listen": f"0.0.0.0:{PORT}", "data_dir": DATA_DIR}
    for key, value in want.items():
        if cfg.get(key) != value:
            problem(f"{name}: ctxhost.toml {key} = {cfg.get(key)!r}, not {value!r}")
    if not str(cfg.get("cache_dir", "")).startswith(DATA_DIR + "/"):
        problem(f"{name}: cache_dir {cfg.get('cache_dir')!r} is not on the data volume")
    if cfg.get("contexts") != contexts:
        problem(f"{name}: contexts = {cfg.get('contexts')!r}, not {contexts!r}")
    plugins = cfg.get("plugins", {})
    if sorted(plugins) != sorted(contexts):
        problem(f"{name}: plugins {sorted(plugins)} are not the group's contexts {contexts}")
    for ctx, entry in plugins.items():
        path = f"/usr/lib/ctxhost/plugins/{ctx}.wasm"
        if entry.get("path") != path:
            problem(f"{name}: plugins.{ctx}.path = {entry.get('path')!r}, not {path!r}")
    for key in ("admin_token", "hs256_secret"):
        if key in cfg or key in cfg.get("auth", {}):
            problem(f"{name}: ctxhost.toml holds the secret {key} itself")
    amqp = cfg.get("amqp")
    if layout == "base" and (amqp is None or "url" in amqp):
        problem(f"{name}: needs an [amqp] table without url (CTXHOST_AMQP_URL carries it)")
    if layout == "dev" and amqp is not None:
        problem(f"{name}: the development layout runs the embedded bus, not [amqp]")
    if re.search(r"amqps?://[^\s\"'/]*@", toml_text):
        problem(f"{name}: ctxhost.toml holds broker credentials")


def main():
    layout, rendered, root = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    if not docs:
        problem("the rendering holds no object")

    for d in docs:
        label = f"{d.get('kind')}/{get(d, 'metadata', 'name')}"
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problem(f"{label}: invalid for Kubernetes {KUBERNETES_VERSION}: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problem(f"{label}: no schema: {e}")

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    namespaces = set(by_kind.get("Namespace", {}))
    if len(namespaces) != 1:
        problem(f"expected one Namespace, found {sorted(namespaces)}")
    for d in docs:
        if d["kind"] != "Namespace" and get(d, "metadata", "namespace") not in namespaces:
            problem(f"{d['kind']}/{d['metadata']['name']}: not in the Namespace {sorted(namespaces)}")

    # Secrets: the expected keys, and none of their values in a ConfigMap.
    secret_values = {}
    for s in by_kind.get("Secret", {}).values():
        for k, v in (s.get("data") or {}).items():
            secret_values[k] = base64.b64decode(v).decode()
        for k, v in (s.get("stringData") or {}).items():
            secret_values[k] = v
    missing = SECRET_KEYS[layout] - set(secret_values)
    if missing:
        problem(f"Secrets lack the keys {sorted(missing)}")
    for key, value in secret_values.items():
        if "CHANGE-ME" not in value and key != "username":
            problem(f"Secret key {key}: not a placeholder marked CHANGE-ME")
    for cm in by_kind.get("ConfigMap", {}).values():
        for file, text in (cm.get("data") or {}).items():
            for key, value in secret_values.items():
                if key != "username" and len(value.strip()) >= 6 and value.strip() in text:
                    problem(f"ConfigMap/{cm['metadata']['name']} {file}: holds the value of the secret {key}")

    services = by_kind.get("Service", {})
    pdbs = by_kind.get("PodDisruptionBudget", {})
    statefulsets = by_kind.get("StatefulSet", {})
    groups = LAYOUTS[layout]
    ctxhost_sets = {n: s for n, s in statefulsets.items()
                    if get(s, "spec", "template", "metadata", "labels", "app.kubernetes.io/name") == "ctxhost"}
    if sorted(ctxhost_sets) != sorted(groups):
        problem(f"ctxhost StatefulSets {sorted(ctxhost_sets)}, expected {sorted(groups)}")
    if layout == "base" and "rabbitmq" not in statefulsets:
        problem("no RabbitMQ StatefulSet")
    if layout == "dev" and "rabbitmq" in statefulsets:
        problem("the development layout runs no RabbitMQ")

    service_of_group = {}
    for name, sts in statefulsets.items():
        label = f"StatefulSet/{name}"
        pod = get(sts, "spec", "template", "spec", default={})
        labels = get(sts, "spec", "template", "metadata", "labels", default={})
        claims = [get(c, "metadata", "name") for c in get(sts, "spec", "volumeClaimTemplates", default=[])]
        if not claims:
            problem(f"{label}: no volumeClaimTemplate")
        svc = [s for s in services.values() if selects(get(s, "spec", "selector"), labels)]
        if not svc:
            problem(f"{label}: no Service selects its pods")
        if get(sts, "spec", "serviceName") not in services:
            problem(f"{label}: serviceName {get(sts, 'spec', 'serviceName')!r} is no Service")
        if not any(selects(get(p, "spec", "selector"), labels) for p in pdbs.values()):
            problem(f"{label}: no PodDisruptionBudget selects its pods")
        if name not in ctxhost_sets:
            continue
        service_of_group[name] = {s["metadata"]["name"] for s in svc}
        if get(sts, "spec", "replicas") != 1:
            problem(f"{label}: replicas is not 1 (each replica would have a state of its own)")
        annotations = get(sts, "spec", "template", "metadata", "annotations", default={})
        want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}
        for k, v in want.items():
            if annotations.get(k) != v:
                problem(f"{label}: annotation {k} is {annotations.get(k)!r}, not {v!r}")
        containers = pod.get("containers", [])
        if len(containers) != 1:
            problem(f"{label}: expected one container")
            continue
        c = containers[0]
        cname = f"{label} container {c.get('name')}"
        if c.get("image") != "ctxhost:latest":
            problem(f"{cname}: image {c.get('image')!r}, not the placeholder ctxhost:latest")
        check_probe(cname, c, "startupProbe", "/healthz")
        check_probe(cname, c, "livenessProbe", "/healthz")
        check_probe(cname, c, "readinessProbe", "/readyz")
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if not get(c, "resources", kind, r):
                    problem(f"{cname}: no resources.{kind}.{r}")
        check_security(cname, pod, c)
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        data = mounts.get(DATA_DIR)
        if not data or data["name"] not in claims:
            problem(f"{cname}: no volumeClaimTemplate mounted at {DATA_DIR}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        cfg_mount = mounts.get(CONFIG_DIR)
        cm_name = get(volumes, cfg_mount["name"] if cfg_mount else "", "configMap", "name")
        cm = by_kind.get("ConfigMap", {}).get(cm_name)
        if not cm or "ctxhost.toml" not in (cm.get("data") or {}):
            problem(f"{cname}: no ConfigMap with ctxhost.toml mounted at {CONFIG_DIR}")
        else:
            check_config(f"ConfigMap/{cm_name}", cm["data"]["ctxhost.toml"], groups[name], layout)
        env = {e["name"]: e for e in c.get("env", [])}
        if layout == "base":
            url = get(env, "CTXHOST_AMQP_URL", "value", default="")
            refs = re.findall(r"\$\(([A-Z_]+)\)", url)
            if not url.startswith("amqp://") or len(refs) != 2:
                problem(f"{cname}: CTXHOST_AMQP_URL {url!r} does not take user and password from variables")
            for r in refs:
                if not get(env, r, "valueFrom", "secretKeyRef"):
                    problem(f"{cname}: {r} does not come from a Secret")
            host = re.sub(r"^amqp://[^@]*@", "", url).split(":")[0].split("/")[0]
            if host not in services:
                problem(f"{cname}: broker host {host!r} is no Service")

    # Every context runs in exactly one group.
    seen = [ctx for g in groups.values() for ctx in g]
    if sorted(seen) != sorted(set(seen)) or set(seen) != {"order", "payment", "car", "view"}:
        problem(f"contexts are not each in exactly one group: {groups}")

    if layout == "base":
        ingresses = list(by_kind.get("Ingress", {}).values())
        if len(ingresses) != 1:
            problem(f"expected one Ingress, found {len(ingresses)}")
        routes = {}
        for ing in ingresses:
            for rule in get(ing, "spec", "rules", default=[]):
                for p in get(rule, "http", "paths", default=[]):
                    routes[p.get("path")] = (p.get("pathType"), get(p, "backend", "service", "name"))
        for group, contexts in groups.items():
            for ctx in contexts:
                for prefix in sorted(route_prefixes(root, ctx)):
                    got = routes.get(prefix)
                    if not got or got[0] != "Prefix" or got[1] not in service_of_group.get(group, set()):
                        problem(f"Ingress: {prefix} (context {ctx}) is {got}, not a Prefix to the Service of {group}")

    kinds = sorted({d["kind"] for d in docs})
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        print(f"{layout}: {len(problems)} problem(s) in {len(docs)} objects")
        sys.exit(1)
    print(f"{layout}: {len(docs)} objects ({', '.join(kinds)}) valid for Kubernetes {KUBERNETES_VERSION}, all checks passed")


if __name__ == "__main__":
    main()
