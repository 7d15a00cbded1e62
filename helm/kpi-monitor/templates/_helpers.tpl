{{/* Chart name, overridable. */}}
{{- define "kpi-monitor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<name>, or the release name when it contains the name. */}}
{{- define "kpi-monitor.fullname" -}}
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

{{- define "kpi-monitor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "kpi-monitor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kpi-monitor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "kpi-monitor.labels" -}}
helm.sh/chart: {{ include "kpi-monitor.chart" . }}
{{ include "kpi-monitor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kpi-monitor
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kpi-monitor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kpi-monitor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kpi-monitor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret whose keys become environment variables, or "" for none. */}}
{{- define "kpi-monitor.secretName" -}}
{{- if and .Values.secrets.existingSecret .Values.secrets.env }}
{{- fail "secrets: set either existingSecret or env, not both" }}
{{- end }}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.env }}
{{- include "kpi-monitor.fullname" . }}
{{- end }}
{{- end }}

{{- define "kpi-monitor.configMapName" -}}
{{- default (include "kpi-monitor.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/* Mount point of the state volume (SQLite backend). */}}
{{- define "kpi-monitor.stateDir" -}}
/var/lib/kpi-monitor
{{- end }}

{{/* The daemon's config: the user's `config` plus the generated `state` section. */}}
{{- define "kpi-monitor.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $state := dict "retention" (deepCopy .Values.state.retention) }}
{{- if eq .Values.state.backend "postgresql" }}
{{- $_ := set $state "url" (printf "${%s}" .Values.state.postgresql.urlEnv) }}
{{- $_ := set $state "replicas" (int .Values.replicaCount) }}
{{- $_ := set $state "lease_ttl" .Values.state.leaseTTL }}
{{- else }}
{{- $_ := set $state "path" (printf "%s/state.db" (include "kpi-monitor.stateDir" .)) }}
{{- end }}
{{- $_ := set $config "state" $state }}
{{- toYaml $config }}
{{- end }}

{{- define "kpi-monitor.pvcName" -}}
{{- default (printf "%s-state" (include "kpi-monitor.fullname" .)) .Values.state.persistence.existingClaim }}
{{- end }}
