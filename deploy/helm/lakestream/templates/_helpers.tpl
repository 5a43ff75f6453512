{{- define "lakestream.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lakestream.labels" -}}
app.kubernetes.io/name: lakestream
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "lakestream.selector" -}}
app.kubernetes.io/name: lakestream
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lakestream.secretName" -}}
{{- default (printf "%s-secrets" (include "lakestream.name" .)) .Values.existingSecret -}}
{{- end -}}
