{{/* An image reference from {repository, tag}. */}}
{{- define "switchyard.image" -}}
{{ required "image.repository is required" .repository }}:{{ required "image.tag is required" .tag }}
{{- end }}

{{/* imagePullPolicy, only when set: config/ leaves the Kubernetes default. */}}
{{- define "switchyard.pullPolicy" -}}
{{- with .pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}
