{{/* Name prefix of every object: "<release>-operator" unless overridden (DNS-1123, <= 63). */}}
{{- define "fiso.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fiso.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fiso.selectorLabels" -}}
app.kubernetes.io/name: fiso-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fiso.labels" -}}
helm.sh/chart: {{ include "fiso.chart" . }}
{{ include "fiso.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: fiso
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "fiso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fiso.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fiso.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fiso.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) -}}
{{- end -}}

{{- define "fiso.sidecarWasmerImage" -}}
{{- printf "%s:%s" .Values.sidecar.wasmerImage.repository (default .Chart.AppVersion .Values.sidecar.wasmerImage.tag) -}}
{{- end -}}

{{/* The MutatingWebhookConfiguration (cluster-scoped, so named after the release). */}}
{{- define "fiso.webhookName" -}}
{{- include "fiso.fullname" . -}}
{{- end -}}

{{/* Secret holding the webhook's serving certificate (every certificate mode). */}}
{{- define "fiso.tlsSecretName" -}}
{{- if eq .Values.webhook.certs.mode "secret" -}}
{{- required "webhook.certs.existingSecret is required when webhook.certs.mode=secret" .Values.webhook.certs.existingSecret -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "fiso.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "fiso.controllerMode" -}}
{{- eq .Values.operator.mode "controller" -}}
{{- end -}}

{{/* Leader-election Lease in the release namespace. */}}
{{- define "fiso.leaseName" -}}
{{- printf "%s-leader" (include "fiso.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}
