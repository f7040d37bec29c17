{{- define "bottle-operator.name" -}}bottle-operator{{- end -}}

{{- define "bottle-operator.labels" -}}
app.kubernetes.io/name: bottle-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bottle-operator.selector" -}}
app.kubernetes.io/name: bottle-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bottle-operator.image" -}}
{{- $tag := .image.tag | default .appVersion -}}
{{- if contains "@" .image.repository -}}{{ .image.repository }}{{- else -}}{{ printf "%s:%s" .image.repository $tag }}{{- end -}}
{{- end -}}

{{/* The rules the reconciler needs, and nothing more (shared by Role and ClusterRole). */}}
{{- define "bottle-operator.rules" -}}
- apiGroups: ["bottle-operator.dev"]
  resources: ["bottles"]
  # patch: approved access grants (its own field manager); delete: shutdownPolicy Delete.
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["bottle-operator.dev"]
  resources: ["bottles/status"]
  verbs: ["get", "patch"]
- apiGroups: ["bottle-operator.dev"]
  resources: ["accessrequests"]
  # patch: owner references to their Bottle. create: the API server grants a Role only
  # what its maker holds, and a supervised Bottle's Role may create requests.
  verbs: ["get", "list", "watch", "patch", "create"]
- apiGroups: ["bottle-operator.dev"]
  resources: ["bottles"]
  # Held to grant it: a supervised Bottle's Role has it for that Bottle alone.
  verbs: ["request-access"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["bottle-operator.dev"]
  resources: ["accessrequests/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
