{{/* Names and labels shared by every template. */}}

{{- define "portwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portwarden.fullname" -}}
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

{{- define "portwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portwarden.labels" -}}
helm.sh/chart: {{ include "portwarden.chart" . }}
app.kubernetes.io/name: {{ include "portwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portwarden
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "agent"). */}}
{{- define "portwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portwarden.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "portwarden.componentLabels" -}}
{{ include "portwarden.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "portwarden.agent.fullname" -}}
{{- printf "%s-agent" (include "portwarden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portwarden.controller.fullname" -}}
{{- printf "%s-controller" (include "portwarden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portwarden.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "portwarden.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portwarden.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "portwarden.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portwarden.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The failsafe list as the agent's --failsafe flag wants it: "tcp:22,tcp:6443,udp:68". */}}
{{- define "portwarden.failsafe" -}}
{{- $items := list }}
{{- range .Values.agent.failsafe }}
{{- $items = append $items (printf "%s:%v" (lower .protocol) .ports) }}
{{- end }}
{{- join "," $items }}
{{- end }}
