#!/usr/bin/env bash
# Validates the Kubernetes objects offline: renders every tenant overlay with Kustomize
# (`kubectl kustomize`), checks each object against the Kubernetes OpenAPI schemas of the
# oldest and newest versions we support (kubernetes-validate, strict: unknown fields fail), then
# checks what the schemas cannot: the security settings docs/deploy.md promises.
# Usage: deploy/k8s/check.sh   (exit 1 on the first failure)
set -euo pipefail
cd "$(dirname "$0")"

validator_pin='kubernetes-validate==1.37.0'
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "$validator_pin"
fi
# hostUsers (the pod's own user namespace) is on by default from 1.33.
versions=(1.33.0 1.37.0)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

rendered=()
for tenant in tenants/*/; do
  name=$(basename "$tenant")
  file="$out/$name.yaml"
  if command -v kubectl >/dev/null; then
    kubectl kustomize "$tenant" >"$file"
    echo "rendered tenants/$name with kubectl kustomize ($(grep -c '^kind:' "$file") objects)"
  else
    # Without Kustomize the files are validated one by one: each is a whole object. The
    # rendered overlay (patches applied) is then not checked, and this says so.
    echo "WARNING: kubectl not found: validating tenants/$name's files unrendered" >&2
    for f in base/*.yaml "$tenant"*.yaml; do
      case $(basename "$f") in kustomization.yaml) continue ;; esac
      printf -- '---\n' >>"$file"
      cat "$f" >>"$file"
    done
  fi
  rendered+=("$file")
done

for version in "${versions[@]}"; do
  kubernetes-validate --strict --quiet -k "$version" "${rendered[@]}"
  echo "schemas of Kubernetes $version: ${#rendered[@]} tenant(s) valid"
done

python3 - "${rendered[@]}" <<'PY'
import pathlib
import sys

import yaml

seccomp_root = pathlib.Path("../seccomp/oci")
failures = []


def fail(where, what):
    failures.append(f"{where}: {what}")


for path in sys.argv[1:]:
    objects = [o for o in yaml.safe_load_all(open(path)) if o]
    kinds = {o["kind"] for o in objects}
    if "Secret" in kinds:
        fail(path, "a Secret is rendered: passphrases are created by hand, never committed")
    for needed in ("StatefulSet", "NetworkPolicy", "ServiceAccount"):
        if needed not in kinds:
            fail(path, f"no {needed}")
    for o in objects:
        where = f"{path}: {o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Service" and o["spec"].get("ports"):
            fail(where, "publishes ports: the API listens on loopback only")
        if o["kind"] == "NetworkPolicy":
            spec = o["spec"]
            if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
                fail(where, "must restrict both ingress and egress")
            if spec.get("ingress"):
                fail(where, "admits ingress")
            for rule in spec.get("egress", []):
                if not rule.get("to") or not rule.get("ports"):
                    fail(where, "an egress rule without both peers and ports")
        if o["kind"] != "StatefulSet":
            continue
        if o["spec"].get("replicas") != 1:
            fail(where, "one kernel per tenant (replicas: 1)")
        pod = o["spec"]["template"]["spec"]
        if pod.get("hostUsers") is not False:
            fail(where, "hostUsers: false (the warden's root stays in the pod's user namespace)")
        if pod.get("automountServiceAccountToken") is not False:
            fail(where, "mounts a service account token")
        profile = pod.get("securityContext", {}).get("seccompProfile", {})
        if profile.get("type") != "Localhost":
            fail(where, "the pod's seccomp profile is not Localhost")
        else:
            local = profile.get("localhostProfile", "")
            if not local.startswith("p3ak/") or not (seccomp_root / local[5:]).is_file():
                fail(where, f"seccomp profile {local!r} is not in deploy/seccomp/oci")
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(cw, "allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                fail(cw, "privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(cw, "the root filesystem must be read-only")
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"]:
                fail(cw, "must drop ALL capabilities")
            allowed = {"SETUID", "SETGID", "CHOWN", "FOWNER", "DAC_OVERRIDE", "KILL", "SYS_ADMIN"}
            extra = set(caps.get("add", [])) - allowed
            if extra:
                fail(cw, f"adds capabilities the warden does not need: {sorted(extra)}")
            for env in c.get("env", []):
                if "PASSPHRASE" in env["name"] or "valueFrom" in env:
                    fail(cw, f"environment variable {env['name']}: secrets come from files")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                command = c.get(probe, {}).get("exec", {}).get("command", [])
                if command[-1:] != ["health"]:
                    fail(cw, f"{probe} must run `p3ak health`")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if "/var/lib/p3ak" not in mounts:
                fail(cw, "the home is not on the volume")

if failures:
    for f in failures:
        print(f"k8s: {f}", file=sys.stderr)
    sys.exit(1)
print(f"security settings: {len(sys.argv) - 1} tenant(s) as docs/deploy.md says")
PY
