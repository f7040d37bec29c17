#!/usr/bin/env bash
# A working bottle on kind: a cluster whose CNI (Calico) enforces NetworkPolicy, the three
# images built and loaded, the chart installed, the minimal Bottle applied with its API key
# Secret. Needs docker, kind (v0.30 or newer), kubectl and helm 3. Run from anywhere:
#   ANTHROPIC_API_KEY=sk-ant-... kind/up.sh
# Without ANTHROPIC_API_KEY a new Secret gets a placeholder (an existing one is kept); put
# the real key in later (the command is printed at the end) and cred-proxy picks it up
# without a restart.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CLUSTER=bottle          # the name in kind/cluster.yaml
# A new tag each run: the upgrade then rolls the operator, and it replaces bottle Pods
# whose sidecar or agent image changed.
TAG="${TAG:-dev-$(date +%Y%m%d%H%M%S)}"
CALICO=v3.31.4

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind/up.sh needs $tool on PATH" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --config kind/cluster.yaml
  kubectl --context "kind-$CLUSTER" apply --server-side \
    -f "https://raw.githubusercontent.com/projectcalico/calico/$CALICO/manifests/calico.yaml"
  kubectl --context "kind-$CLUSTER" -n kube-system rollout status daemonset/calico-node --timeout=300s
fi
kubectl config use-context "kind-$CLUSTER"

docker build -f images/operator.Dockerfile -t "bottle-operator/operator:$TAG" .
docker build -f images/sidecar.Dockerfile -t "bottle-operator/sidecar:$TAG" .
docker build -f images/agent.Dockerfile -t "bottle-operator/agent:$TAG" images/
for image in operator sidecar agent; do
  kind load docker-image --name "$CLUSTER" "bottle-operator/$image:$TAG"
done

# Helm installs a chart's CRDs only on its first install; applying them first keeps a re-run
# after an upgrade current (the operator refuses to start without every CRD it watches).
kubectl apply --server-side --force-conflicts -f charts/bottle-operator/crds/
helm upgrade --install bottle-operator charts/bottle-operator \
  --namespace bottle-system --create-namespace \
  --set image.tag="$TAG" --set bottle.sidecarImage.tag="$TAG" --set bottle.agentImage.tag="$TAG" \
  --wait --timeout 5m

# The key goes from the environment straight into the Secret (never onto a command line
# that `ps` shows, never into a file). Without it, a key already there is kept.
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  printf '%s' "$ANTHROPIC_API_KEY" |
    kubectl create secret generic anthropic --from-file=api-key=/dev/stdin \
      --dry-run=client -o yaml | kubectl apply -f -
elif ! kubectl get secret anthropic >/dev/null 2>&1; then
  echo "ANTHROPIC_API_KEY is not set: the Secret anthropic holds a placeholder until you put the key in." >&2
  printf 'replace-me' | kubectl create secret generic anthropic --from-file=api-key=/dev/stdin
fi
kubectl apply -f examples/bottle-minimal.yaml
kubectl wait --for=condition=Ready bottle/minimal --timeout=5m || {
  kubectl describe bottle minimal
  exit 1
}
kubectl get bottles
cat <<'MSG'

Your bottle is running. Get in:
  kubectl exec -it minimal -c agent -- claude          # or: kubectl bottle exec minimal
Put the real API key in (cred-proxy reloads it; the agent never sees it):
  printf '%s' "$ANTHROPIC_API_KEY" | kubectl create secret generic anthropic \
    --from-file=api-key=/dev/stdin --dry-run=client -o yaml | kubectl apply -f -
See what it may reach, and change it live:
  kubectl get configmap minimal-config -o yaml
  kubectl edit bottle minimal
MSG
