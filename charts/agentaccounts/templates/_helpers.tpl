{{/* Names, labels and the RBAC rule sets shared by the cluster-wide and namespaced templates. */}}

{{- define "agentaccounts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentaccounts.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "agentaccounts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentaccounts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agentaccounts.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agentaccounts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentaccounts
{{- end }}

{{- define "agentaccounts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentaccounts.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agentaccounts.leaseName" -}}
{{- default (printf "%s-leader" (include "agentaccounts.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "agentaccounts.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Rules on cluster-scoped objects (README.md, "cluster" rows, and "cluster-namespaced" in namespaced mode).
*/}}
{{- define "agentaccounts.rules.cluster" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
- apiGroups: [agentaccounts.dev]
  resources: [clusteraccountproviders]
  verbs: [get, list, watch, patch]
- apiGroups: [agentaccounts.dev]
  resources: [clusteraccountproviders/status]
  verbs: [patch]
{{- if .Values.watchNamespaces }}
{{- /* kopf lists and watches namespaces to match its namespace list only when it is NOT cluster-wide;
without this it retries for about a minute, logging 403s, before it falls back and starts. */}}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}

{{/*
Rules in every namespace the operator serves (README.md, "watched" rows): a Role per watched namespace,
or one ClusterRole in cluster-wide mode.
*/}}
{{- define "agentaccounts.rules.watched" -}}
- apiGroups: [agentaccounts.dev]
  resources: [agentaccounts]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [agentaccounts.dev]
  resources: [agentaccounts/status, accountproviders/status]
  verbs: [patch]
- apiGroups: [agentaccounts.dev]
  resources: [agentaccounts/finalizers]
  verbs: [update]
- apiGroups: [agentaccounts.dev]
  resources: [accountproviders]
  verbs: [get, list, watch, patch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets, serviceaccounts]
  verbs: [get, create, patch, update, delete, deletecollection]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch, update, delete, deletecollection]
- apiGroups: [""]
  resources: [serviceaccounts/token]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  resourceNames: [kube-root-ca.crt]
  verbs: [get]
{{- end }}

{{/*
Rules in the release namespace (README.md, "release" rows).
*/}}
{{- define "agentaccounts.rules.release" -}}
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.leaderElection.enabled }}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ include "agentaccounts.leaseName" . | quote }}]
  verbs: [get, update]
{{- end }}
{{- end }}
