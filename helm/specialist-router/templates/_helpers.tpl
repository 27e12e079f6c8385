{{/* The RayService's name; KubeRay allows at most 47 characters. Other objects derive theirs from it. */}}
{{- define "specialist-router.name" -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- end -}}

{{- define "specialist-router.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* On the Ray pods, beside KubeRay's own labels (its app.kubernetes.io/name is left alone); the metrics
Service selects on them. */}}
{{- define "specialist-router.podLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
{{- end -}}

{{- define "specialist-router.podMetadata" -}}
labels:
  {{- include "specialist-router.podLabels" . | nindent 2 }}
{{- if .Values.metrics.podAnnotations }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: "8080"
  prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "specialist-router.image" -}}
{{- $repository := required "image.repository is required: the image built from helm/Dockerfile" .Values.image.repository -}}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
