{{/* Names, labels and the pod template shared by every loopwise workload. */}}

{{- define "loopwise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "loopwise.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "loopwise.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "loopwise.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The four services in the order of docs/architecture.md §2; the index gives the metrics port offset. */}}
{{- define "loopwise.services" -}}
decision feedback trainer evaluator
{{- end -}}

{{/* Who calls whom (docs/architecture.md §3): the NetworkPolicies are derived from this.
The web console, when enabled, calls all four (templates/console.yaml). */}}
{{- define "loopwise.calls" -}}
decision: [feedback, trainer]
feedback: [decision, trainer]
trainer: [feedback, decision]
evaluator: [feedback, decision, trainer]
{{- if .Values.console.enabled }}
console: [decision, feedback, trainer, evaluator]
{{- end }}
{{- end -}}

{{- define "loopwise.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "loopwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: loopwise
{{- end -}}

{{- define "loopwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loopwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one service: call with (dict "root" $ "service" "decision"). */}}
{{- define "loopwise.componentLabels" -}}
{{ include "loopwise.labels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "loopwise.componentSelector" -}}
{{ include "loopwise.selectorLabels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "loopwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "loopwise.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "loopwise.storeSecretName" -}}
{{- if and .Values.store.cassandra.existingSecret (not .Values.store.cassandra.inCluster.enabled) -}}
{{- .Values.store.cassandra.existingSecret -}}
{{- else -}}
{{- printf "%s-store" (include "loopwise.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "loopwise.storeUrl" -}}
{{- if .Values.store.cassandra.inCluster.enabled -}}
{{- printf "cassandra://%s-cassandra:9042/%s?consistency=ONE&replication=SimpleStrategy:1" (include "loopwise.fullname" .) .Values.store.cassandra.inCluster.keyspace -}}
{{- else -}}
{{- .Values.store.cassandra.url -}}
{{- end -}}
{{- end -}}

{{- define "loopwise.metricsPort" -}}
{{- $index := 0 -}}
{{- range $i, $name := splitList " " (include "loopwise.services" .root) -}}
{{- if eq $name $.service -}}{{- $index = $i -}}{{- end -}}
{{- end -}}
{{- add .root.Values.metrics.port $index -}}
{{- end -}}

{{/*
The image of one loopwise component: (dict "root" $ "service" "decision"). Each service
(and the console) is its own image, <image.repository>/<service>, referenced by
<service>.image.digest when set (repo@sha256:…), else by image.tag (default: appVersion).
*/}}
{{- define "loopwise.image" -}}
{{- $v := .root.Values -}}
{{- $digest := dig "image" "digest" "" (index $v .service) -}}
{{- if $digest -}}
{{- printf "%s/%s@%s" $v.image.repository .service $digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $v.image.repository .service ($v.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart runs the schema migrations in a pre-install/pre-upgrade Job: only
against an existing Cassandra (the in-cluster one and SQLite do not exist before install). */}}
{{- define "loopwise.migrationsJob" -}}
{{- $v := .Values -}}
{{- if and $v.migrations.job.enabled (eq $v.store.type "cassandra") (not $v.store.cassandra.inCluster.enabled) -}}
true
{{- end -}}
{{- end -}}

{{/*
Scheduling of one component's pods: (dict "root" $ "service" "decision"). Its own
`affinity` and `topologySpreadConstraints` replace the chart's defaults (scheduling.*):
soft (or hard) anti-affinity between pods of the same component on one node, and
ScheduleAnyway spreads over zones and nodes. Also the priority class.
*/}}
{{- define "loopwise.scheduling" -}}
{{- $v := .root.Values -}}
{{- $svc := index $v .service -}}
{{- $selector := fromYaml (include "loopwise.componentSelector" .) -}}
{{- $priority := $svc.priorityClassName | default $v.priorityClassName -}}
{{- with $priority }}
priorityClassName: {{ . }}
{{- end }}
{{- with $svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $svc.affinity }}
affinity:
  {{- toYaml $svc.affinity | nindent 2 }}
{{- else if eq $v.scheduling.podAntiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: {{ $v.scheduling.hostKey }}
          labelSelector:
            matchLabels:
              {{- toYaml $selector | nindent 14 }}
{{- else if eq $v.scheduling.podAntiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: {{ $v.scheduling.hostKey }}
        labelSelector:
          matchLabels:
            {{- toYaml $selector | nindent 12 }}
{{- end }}
{{- if $svc.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $svc.topologySpreadConstraints | nindent 2 }}
{{- else if $v.scheduling.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range $key := list $v.scheduling.zoneKey $v.scheduling.hostKey }}
  - maxSkew: {{ $v.scheduling.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- toYaml $selector | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* A component's pod security context: the global one with its own keys over it. */}}
{{- define "loopwise.podSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.podSecurityContext) ((index .root.Values .service).podSecurityContext | default dict)) -}}
{{- end -}}

{{/* A component's container security context: the global one with its own keys over it. */}}
{{- define "loopwise.securityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.securityContext) ((index .root.Values .service).securityContext | default dict)) -}}
{{- end -}}

{{/*
Refuse value sets that cannot work (rendered from the ConfigMap template, so every
install, upgrade and `helm template` runs it).
*/}}
{{- define "loopwise.validate" -}}
{{- $v := .Values -}}
{{- if not (has $v.store.type (list "cassandra" "sqlite")) -}}
{{- fail (printf "store.type must be cassandra or sqlite, not %q" $v.store.type) -}}
{{- end -}}
{{- if eq $v.store.type "sqlite" -}}
{{- range $name := splitList " " (include "loopwise.services" .) -}}
{{- $svc := index $v $name -}}
{{- if gt (int $svc.replicas) 1 -}}
{{- fail (printf "store.type=sqlite needs exactly one replica: %s.replicas is %v (use Cassandra to scale)" $name $svc.replicas) -}}
{{- end -}}
{{- if and $svc.autoscaling $svc.autoscaling.enabled -}}
{{- fail (printf "store.type=sqlite cannot autoscale: set %s.autoscaling.enabled=false (use Cassandra to scale)" $name) -}}
{{- end -}}
{{- end -}}
{{- if gt (int $v.decision.workers) 1 -}}
{{- fail "store.type=sqlite needs decision.workers=1" -}}
{{- end -}}
{{- if $v.store.cassandra.inCluster.enabled -}}
{{- fail "store.cassandra.inCluster.enabled needs store.type=cassandra" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.store.type "cassandra") (not $v.store.cassandra.inCluster.enabled) (not $v.store.cassandra.existingSecret) (not $v.store.cassandra.url) -}}
{{- fail "store.type=cassandra needs store.cassandra.url, store.cassandra.existingSecret or store.cassandra.inCluster.enabled" -}}
{{- end -}}
{{- if and $v.tls.enabled (not (and $v.tls.secretName $v.auth.tokensSecret $v.auth.serviceTokenSecret)) -}}
{{- fail "tls.enabled (secure mode) needs tls.secretName, auth.tokensSecret and auth.serviceTokenSecret" -}}
{{- end -}}
{{- if and $v.monitoring.serviceMonitor.enabled (not $v.metrics.enabled) -}}
{{- fail "monitoring.serviceMonitor.enabled needs metrics.enabled (the services serve no metrics port)" -}}
{{- end -}}
{{- if and $v.tls.certManager.enabled (not $v.tls.enabled) -}}
{{- fail "tls.certManager.enabled needs tls.enabled (there is no TLS to issue certificates for)" -}}
{{- end -}}
{{- if and $v.tls.enabled $v.tls.certManager.enabled (not $v.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name (a cert-manager Issuer or ClusterIssuer that signs with a CA)" -}}
{{- end -}}
{{- if and $v.tls.enabled $v.helmTest.enabled (not $v.helmTest.tokenSecret) -}}
{{- fail "helmTest.enabled with tls.enabled needs helmTest.tokenSecret (a Secret with the test's token under `token`), or helmTest.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/*
The pod template of one service: (dict "root" $ "service" "decision" "volumes" list
"mounts" list). The command is the image's own: python -m loopwise.services.<name>.
*/}}
{{- define "loopwise.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $name := .service -}}
{{- $svc := index $v $name -}}
{{- $probePort := ternary $v.tls.healthPort $svc.port $v.tls.enabled -}}
metadata:
  labels:
    {{- include "loopwise.componentLabels" . | nindent 4 }}
    {{- with (merge (dict) ($svc.podLabels | default dict) $v.podLabels) }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if $v.metrics.enabled }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ include "loopwise.metricsPort" . | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $svc.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "loopwise.serviceAccountName" $root }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
  securityContext:
    {{- include "loopwise.podSecurityContext" . | nindent 4 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- include "loopwise.scheduling" . | nindent 2 }}
  containers:
    - name: {{ $name }}
      image: {{ include "loopwise.image" . | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: ["python", "-m", "loopwise.services.{{ $name }}"]
      envFrom:
        - configMapRef:
            name: {{ include "loopwise.fullname" $root }}-config
      env:
        # Where this service listens; the ConfigMap says where the others are.
        - name: LOOPWISE_{{ upper $name }}_ADDRESS
          value: "{{ $v.listenHost }}:{{ $svc.port }}"
        - name: LOOPWISE_{{ upper $name }}_STORE_URL
          {{- if eq $v.store.type "sqlite" }}
          value: "sqlite:///{{ $v.dataDir }}/{{ $name }}.db"
          {{- else }}
          valueFrom:
            secretKeyRef:
              name: {{ include "loopwise.storeSecretName" $root }}
              key: url
          {{- end }}
        {{- if $v.tls.enabled }}
        - name: LOOPWISE_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ $v.auth.serviceTokenSecret }}
              key: {{ $name }}
        {{- end }}
        {{- if and $v.privacy.piiHashKeySecret (has $name (list "decision" "feedback")) }}
        - name: LOOPWISE_PII_HASH_KEY
          valueFrom:
            secretKeyRef:
              name: {{ $v.privacy.piiHashKeySecret }}
              key: key
        {{- end }}
        - name: OTEL_SERVICE_NAME
          value: loopwise-{{ $name }}
        {{- if eq $name "decision" }}
        - name: LOOPWISE_DECISION_WORKERS
          value: {{ $svc.workers | quote }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: grpc
          containerPort: {{ $svc.port }}
          protocol: TCP
        {{- if $v.tls.enabled }}
        - name: health
          containerPort: {{ $v.tls.healthPort }}
          protocol: TCP
        {{- end }}
        {{- if $v.metrics.enabled }}
        - name: metrics
          containerPort: {{ include "loopwise.metricsPort" . }}
          protocol: TCP
        {{- end }}
      startupProbe:
        grpc:
          port: {{ $probePort }}
        periodSeconds: 5
        failureThreshold: 36
      readinessProbe:
        grpc:
          port: {{ $probePort }}
        periodSeconds: 5
        failureThreshold: 2
      livenessProbe:
        grpc:
          port: {{ $probePort }}
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 6
      resources:
        {{- toYaml $svc.resources | nindent 8 }}
      securityContext:
        {{- include "loopwise.securityContext" . | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: {{ $v.dataDir }}
        - name: tmp
          mountPath: /tmp
        {{- if $v.tls.enabled }}
        - name: tls
          mountPath: {{ $v.tls.mountPath }}
          readOnly: true
        - name: tokens
          mountPath: {{ $v.auth.mountPath }}
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
    {{- if $v.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ ternary (printf "%s-%s" $v.tls.secretName $name) $v.tls.secretName $v.tls.perServiceSecrets }}
        defaultMode: 0440
    # A directory mount (not subPath), so a changed Secret reaches the running pods.
    - name: tokens
      secret:
        secretName: {{ $v.auth.tokensSecret }}
        defaultMode: 0440
        items:
          - key: tokens.yaml
            path: tokens.yaml
    {{- end }}
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/*
A Deployment (decision, trainer, evaluator): (dict "root" $ "service" "trainer").
Its data dir is an emptyDir (decision: the decision-log spool and the model cache,
drained to feedback on SIGTERM), or the SQLite volume with store.type=sqlite.
*/}}
{{- define "loopwise.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := index $v .service -}}
{{- $data := dict "name" "data" "emptyDir" (dict "sizeLimit" (dig "spool" "sizeLimit" "2Gi" $svc)) -}}
{{- if eq $v.store.type "sqlite" -}}
{{- $data = dict "name" "data" "persistentVolumeClaim" (dict "claimName" (printf "%s-%s-data" (include "loopwise.fullname" $root) .service)) -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "loopwise.fullname" $root }}-{{ .service }}
  labels:
    {{- include "loopwise.componentLabels" . | nindent 4 }}
spec:
  {{- if not (and $svc.autoscaling $svc.autoscaling.enabled) }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "loopwise.componentSelector" . | nindent 6 }}
  strategy:
    {{- if eq $v.store.type "sqlite" }}
    # One pod owns the SQLite volume: the old one stops before the new one starts.
    type: Recreate
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
    {{- end }}
  template:
    {{- include "loopwise.podTemplate" (dict "root" $root "service" .service "volumes" (list $data)) | nindent 4 }}
{{- end -}}

{{/* A Service for one service's gRPC port: (dict "root" $ "service" "decision"). */}}
{{- define "loopwise.service" -}}
{{- $svc := index .root.Values .service -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "loopwise.fullname" .root }}-{{ .service }}
  labels:
    {{- include "loopwise.componentLabels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "loopwise.componentSelector" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $svc.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- if .root.Values.metrics.enabled }}
    - name: metrics
      port: {{ include "loopwise.metricsPort" . }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end -}}

{{/* A HorizontalPodAutoscaler on CPU: (dict "root" $ "service" "decision" "kind" "Deployment"). */}}
{{- define "loopwise.hpa" -}}
{{- $svc := index .root.Values .service -}}
{{- if $svc.autoscaling.enabled -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "loopwise.fullname" .root }}-{{ .service }}
  labels:
    {{- include "loopwise.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ .kind }}
    name: {{ include "loopwise.fullname" .root }}-{{ .service }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    scaleDown:
      # Scale down slowly: each removed pod drains its spool first.
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
{{- end -}}
{{- end -}}

{{/* A PodDisruptionBudget: (dict "root" $ "service" "decision"). */}}
{{- define "loopwise.pdb" -}}
{{- $svc := index .root.Values .service -}}
{{- if $svc.pdb.enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "loopwise.fullname" .root }}-{{ .service }}
  labels:
    {{- include "loopwise.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $svc.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "loopwise.componentSelector" . | nindent 6 }}
{{- end -}}
{{- end -}}

{{/*
The NetworkPolicy of one service: (dict "root" $ "service" "decision"). Ingress from the
services that call it (loopwise.calls), the clients and the metrics scrapers; egress to
the services it calls, DNS and the store.
*/}}
{{- define "loopwise.networkPolicy" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $name := .service -}}
{{- $svc := index $v $name -}}
{{- $calls := fromYaml (include "loopwise.calls" $root) -}}
{{- $callers := list -}}
{{- range $caller, $targets := $calls -}}
{{- if has $name $targets -}}{{- $callers = append $callers $caller -}}{{- end -}}
{{- end -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "loopwise.fullname" $root }}-{{ $name }}
  labels:
    {{- include "loopwise.componentLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "loopwise.componentSelector" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    - ports:
        - port: {{ $svc.port }}
          protocol: TCP
      from:
        {{- range $caller := sortAlpha $callers }}
        - podSelector:
            matchLabels:
              {{- include "loopwise.componentSelector" (dict "root" $root "service" $caller) | nindent 14 }}
        {{- end }}
        {{- with $v.networkPolicy.clients }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- if and $v.metrics.enabled $v.networkPolicy.metricsScrapers }}
    - ports:
        - port: {{ include "loopwise.metricsPort" . }}
          protocol: TCP
      from:
        {{- toYaml $v.networkPolicy.metricsScrapers | nindent 8 }}
    {{- end }}
  egress:
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- range $target := index $calls $name }}
    - ports:
        - port: {{ (index $v $target).port }}
          protocol: TCP
      to:
        - podSelector:
            matchLabels:
              {{- include "loopwise.componentSelector" (dict "root" $root "service" $target) | nindent 14 }}
    {{- end }}
    {{- if eq $v.store.type "cassandra" }}
    - ports:
        - port: {{ $v.store.cassandra.port }}
          protocol: TCP
      {{- if $v.store.cassandra.inCluster.enabled }}
      to:
        - podSelector:
            matchLabels:
              {{- include "loopwise.componentSelector" (dict "root" $root "service" "cassandra") | nindent 14 }}
      {{- else if $v.networkPolicy.cassandraPeers }}
      to:
        {{- toYaml $v.networkPolicy.cassandraPeers | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- with $v.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
