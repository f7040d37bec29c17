#!/usr/bin/env bash
# A complete bottle on kind: cluster (Calico for NetworkPolicy), images built and loaded,
# the chart installed, the example Bottle applied. Needs docker, kind, kubectl and helm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CLUSTER=bottle
TAG=dev
CALICO=v3.29.1

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --config kind/cluster.yaml
  kubectl apply -f "https://raw.githubusercontent.com/projectcalico/calico/$CALICO/manifests/calico.yaml"
  kubectl -n kube-system rollout status daemonset/calico-node --timeout=300s
fi
kubectl config use-context "kind-$CLUSTER"

docker build -f images/operator.Dockerfile -t "bottle-operator/operator:$TAG" .
docker build -f images/sidecar.Dockerfile -t "bottle-operator/sidecar:$TAG" .
docker build -f images/agent.Dockerfile -t "bottle-operator/agent:$TAG" images/
for image in operator sidecar agent; do
  kind load docker-image --name "$CLUSTER" "bottle-operator/$image:$TAG"
done

helm upgrade --install bottle-operator charts/bottle-operator \
  --namespace bottle-system --create-namespace \
  --set image.tag="$TAG" --set bottle.sidecarImage.tag="$TAG" --set bottle.agentImage.tag="$TAG" \
  --wait --timeout 5m

kubectl apply -f examples/bottle-minimal.yaml
kubectl wait --for=condition=Ready bottle/minimal --timeout=5m || kubectl describe bottle minimal
kubectl get bottles
cat <<MSG

Your bottle is running. Get in:
  kubectl exec -it minimal -c agent -- claude          # or: kubectl bottle exec minimal
See what it may reach, and change it live:
  kubectl get configmap minimal-config -o yaml
  kubectl edit bottle minimal
MSG
