{{/* Names. */}}
{{- define "callqc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "callqc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "callqc.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels shared by every object; selectorLabels are the stable subset. */}}
{{- define "callqc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "callqc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "callqc.labels" -}}
{{ include "callqc.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "callqc.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* S3 endpoint: the chart's MinIO, or the external one (required then). */}}
{{- define "callqc.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{ include "callqc.fullname" . }}-minio:{{ .Values.minio.port }}
{{- else -}}
{{ required "s3.endpoint is required when minio.enabled=false" .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/* Environment every callqc process needs: S3 location and credentials, the master keyring. */}}
{{- define "callqc.env" -}}
- name: CALLQC_S3__ENDPOINT
  value: {{ include "callqc.s3Endpoint" . | quote }}
- name: CALLQC_S3__SECURE
  value: {{ .Values.s3.secure | toString | quote }}
- name: CALLQC_S3__REGION
  value: {{ .Values.s3.region | quote }}
- name: CALLQC_S3__BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: CALLQC_S3__ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.existingSecret }}, key: {{ .Values.s3.accessKeyKey }}}
- name: CALLQC_S3__SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.existingSecret }}, key: {{ .Values.s3.secretKeyKey }}}
- name: CALLQC_MASTER_KEYRING
  valueFrom:
    secretKeyRef: {name: {{ .Values.security.keyringSecret.name }}, key: {{ .Values.security.keyringSecret.key }}}
- name: HF_HUB_OFFLINE
  value: "1"
- name: CALLQC_TELEMETRY__METRICS_HOST
  value: "0.0.0.0"
- name: CALLQC_TELEMETRY__DISPATCHER_METRICS_PORT
  value: {{ .Values.ray.callqcMetricsPort | quote }}
{{- end }}

{{/* Ray's custom resources as KubeRay passes them to `ray start --resources` (a quoted JSON string). */}}
{{- define "callqc.rayResources" -}}
{{- printf "\"%s\"" (toJson . | replace "\"" "\\\"") | squote }}
{{- end }}

{{/* The Serve config deployed by KubeRay: one application, proxy disabled. */}}
{{- define "callqc.serveConfig" -}}
proxy_location: Disabled
applications:
  - name: {{ .Values.serve.appName }}
    route_prefix: null
    import_path: {{ .Values.serve.importPath }}
    runtime_env:
      env_vars:
        {{- toYaml .Values.serve.envVars | nindent 8 }}
    deployments:
      {{- toYaml .Values.serve.deployments | nindent 6 }}
{{- end }}

{{/* Pod labels of Ray pods: NetworkPolicies and the metrics Service select callqc.io/role=ray. */}}
{{- define "callqc.rayPodLabels" -}}
{{ include "callqc.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
callqc.io/role: ray
{{- end }}

{{/* Volumes and mounts shared by Ray pods: logs, shared memory for the object store, models. */}}
{{- define "callqc.rayVolumes" -}}
- name: ray-logs
  emptyDir: {}
{{- if .Values.ray.tls.enabled }}
- name: ray-ca
  secret: {secretName: {{ .Values.ray.tls.caSecret }}, defaultMode: 0400}
- name: ray-tls
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- end }}
- name: dshm
  emptyDir: {medium: Memory, sizeLimit: 4Gi}
{{- if .Values.models.existingClaim }}
- name: models
  persistentVolumeClaim: {claimName: {{ .Values.models.existingClaim }}, readOnly: true}
{{- end }}
{{- end }}

{{- define "callqc.rayVolumeMounts" -}}
- {name: ray-logs, mountPath: /tmp/ray}
{{- if .Values.ray.tls.enabled }}
- {name: ray-tls, mountPath: /etc/ray/tls, readOnly: true}
{{- end }}
- {name: dshm, mountPath: /dev/shm}
{{- if .Values.models.existingClaim }}
- {name: models, mountPath: {{ .Values.models.mountPath }}, readOnly: true}
{{- end }}
{{- end }}

{{/* NetworkPolicy peer: this release's pods of one role (ray | gateway | s3). */}}
{{- define "callqc.rolePeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .root.Release.Name }}
    callqc.io/role: {{ .role }}
{{- end }}

{{- define "callqc.namespacePeer" -}}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ . }}
{{- end }}

{{/* Ray's internal mutual TLS: the variables every Ray process reads (certificates issued by callqc.rayTlsInit). */}}
{{- define "callqc.rayTlsEnv" -}}
{{- if .Values.ray.tls.enabled }}
- {name: RAY_USE_TLS, value: "1"}
- {name: RAY_TLS_SERVER_CERT, value: /etc/ray/tls/node.crt}
- {name: RAY_TLS_SERVER_KEY, value: /etc/ray/tls/node.key}
- {name: RAY_TLS_CA_CERT, value: /etc/ray/tls/ca.crt}
{{- end }}
{{- end }}

{{/* Init container of every Ray pod: issue this pod's certificate (SAN = pod IP) from the Ray CA Secret. */}}
{{- define "callqc.rayTlsInit" -}}
{{- if .Values.ray.tls.enabled }}
initContainers:
  - name: ray-tls-cert
    image: {{ include "callqc.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["sh", "-c", "python -m callqc.security.node_cert --ca-dir /etc/ray/ca --out /etc/ray/tls --host \"$POD_IP\" --host localhost --host 127.0.0.1"]
    env:
      - name: POD_IP
        valueFrom: {fieldRef: {fieldPath: status.podIP}}
    securityContext:
      {{- toYaml .Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - {name: ray-ca, mountPath: /etc/ray/ca, readOnly: true}
      - {name: ray-tls, mountPath: /etc/ray/tls}
{{- end }}
{{- end }}
