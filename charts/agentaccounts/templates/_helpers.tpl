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

{{- /* The Service the API server calls for admission: kopf registers it as the webhooks' client config. */}}
{{- define "agentaccounts.webhookService" -}}
{{- printf "%s-webhook" (include "agentaccounts.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The operator's requester-stamp signing key, in the release namespace (a fixed name: the operator's
default, and the one name the release Role may read). */}}
{{- define "agentaccounts.signingKeySecret" -}}
agentaccounts-signing-key
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
{{- /* Every permission an AgentAccount asks for is checked as its requester (SubjectAccessReview). */}}
- apiGroups: [authorization.k8s.io]
  resources: [subjectaccessreviews]
  verbs: [create]
{{- /* get: a provider's policy.allowedNamespaces selector is matched against the namespace's labels.
list, watch: kopf matches its namespace list against live namespaces only when NOT cluster-wide;
without them it retries for about a minute, logging 403s, before it falls back and starts. */}}
- apiGroups: [""]
  resources: [namespaces]
  verbs: {{ if .Values.watchNamespaces }}[get, list, watch]{{ else }}[get]{{ end }}
{{- /* kopf's managed admission: it creates the two configurations if absent (RBAC cannot limit create
by name) and patches their webhooks whenever its client config changes. */}}
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations, mutatingwebhookconfigurations]
  verbs: [create]
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations, mutatingwebhookconfigurations]
  resourceNames: [{{ .Values.webhook.configuration | quote }}]
  verbs: [get, patch]
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
{{- /* Roles that grant Secrets by name carry a label; listing them by it keeps a new credentials Secret from landing where another agent may read it. */}}
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [list]
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
{{- /* The requester-stamp signing key: created on first start if missing, then read; no other Secret. */}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [{{ include "agentaccounts.signingKeySecret" . | quote }}]
  verbs: [get]
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
