{{/* Names and labels ------------------------------------------------------------------------------ */}}

{{- define "fusion-ray.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-fusion-ray, or just the release when it already names the chart ("fusion", "fusion-ray").
     At most 30 characters: RayJob names (<fullname>-<job>) must stay within KubeRay's 47. */}}
{{- define "fusion-ray.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "fusion-ray.name" . -}}
{{- if or (contains $name .Release.Name) (hasPrefix .Release.Name $name) -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fusion-ray.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fusion-ray.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fusion-ray.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fusion-ray.labels" -}}
{{ include "fusion-ray.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fusion
helm.sh/chart: {{ include "fusion-ray.chart" . }}
{{- end -}}

{{/* Images: <repository>:<tag>-<variant>, pinned (never latest). Argument: dict root, variant. */}}
{{- define "fusion-ray.image" -}}
{{- $v := .root.Values.image -}}
{{- $tag := $v.tag | default .root.Chart.AppVersion -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: \"latest\" is not allowed; pin a version" -}}
{{- end -}}
{{- printf "%s:%s-%s" $v.repository $tag .variant -}}
{{- end -}}

{{- define "fusion-ray.cpuImage" -}}
{{- include "fusion-ray.image" (dict "root" . "variant" .Values.image.cpuVariant) -}}
{{- end -}}

{{- define "fusion-ray.gpuImage" -}}
{{- include "fusion-ray.image" (dict "root" . "variant" .Values.image.gpuVariant) -}}
{{- end -}}

{{- define "fusion-ray.runsClaim" -}}
{{- .Values.storage.existingClaim | default (printf "%s-runs" (include "fusion-ray.fullname" .)) -}}
{{- end -}}

{{- define "fusion-ray.sharedCluster" -}}
{{- include "fusion-ray.fullname" . -}}
{{- end -}}

{{/* Jobs ------------------------------------------------------------------------------------------- */}}

{{/* A deep merge of over onto base that, unlike mergeOverwrite, lets false, 0 and "" win. As YAML. */}}
{{- define "fusion-ray.merge" -}}
{{- $out := deepCopy .base -}}
{{- range $k, $v := .over -}}
{{- $b := get $out $k -}}
{{- if and (kindIs "map" $v) (kindIs "map" $b) -}}
{{- $_ := set $out $k (include "fusion-ray.merge" (dict "base" $b "over" $v) | fromYaml) -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* One job with jobDefaults under it, as YAML (callers: fromYaml). Argument: dict root, job. */}}
{{- define "fusion-ray.job" -}}
{{- $job := include "fusion-ray.merge" (dict "base" .root.Values.jobDefaults "over" .job) | fromYaml -}}
{{- if and .job.jobFile .job.config -}}
{{- fail (printf "jobs[%s]: give jobFile or config, not both" .job.name) -}}
{{- end -}}
{{- if not (or .job.jobFile .job.config) -}}
{{- fail (printf "jobs[%s]: give jobFile (a path in the image) or config (the job itself)" .job.name) -}}
{{- end -}}
{{- if eq $job.cluster "shared" -}}
{{- if not .root.Values.rayCluster.enabled -}}
{{- fail (printf "jobs[%s]: cluster: shared needs rayCluster.enabled (its head mounts the job files)" .job.name) -}}
{{- end -}}
{{- if gt (int (.job.backoffLimit | default 0)) 0 -}}
{{- fail (printf "jobs[%s]: backoffLimit: KubeRay retries only jobs on their own cluster (cluster: own)" .job.name) -}}
{{- end -}}
{{- end -}}
{{- toYaml $job -}}
{{- end -}}

{{- define "fusion-ray.rayJobName" -}}
{{- .job.rayJobName | default (printf "%s-%s" (include "fusion-ray.fullname" .root) .job.name) | trunc 47 | trimSuffix "-" -}}
{{- end -}}

{{- define "fusion-ray.jobConfigMap" -}}
{{- printf "%s-job" (include "fusion-ray.rayJobName" .) -}}
{{- end -}}

{{/* Where the job file is inside the pods. */}}
{{- define "fusion-ray.jobPath" -}}
{{- if .job.jobFile -}}
{{- .job.jobFile -}}
{{- else -}}
{{- printf "/etc/fusion/jobs/%s.yaml" .job.name -}}
{{- end -}}
{{- end -}}

{{/* The run directory: outputDir, else <mount>/<name>; schedules add /<UTC date> (expanded by the shell that
     starts the entrypoint), so every scheduled run writes a fresh directory and a retry the same day resumes. */}}
{{- define "fusion-ray.outputDir" -}}
{{- $base := .job.outputDir | default (printf "%s/%s" (trimSuffix "/" .root.Values.storage.mountPath) .job.name) -}}
{{- if .job.datedOutput -}}
{{- printf "%s/$(date -u +%%Y-%%m-%%d)" (trimSuffix "/" $base) -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{- define "fusion-ray.entrypoint" -}}
{{- printf "fusion run %s --output-dir %s" (include "fusion-ray.jobPath" .) (include "fusion-ray.outputDir" .) -}}
{{- end -}}

{{/* Pods -------------------------------------------------------------------------------------------- */}}

{{- define "fusion-ray.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Ray writes its session, logs and caches under /tmp and $HOME: the root filesystem stays writable. */}}
{{- define "fusion-ray.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Secrets by reference only, then plain variables. */}}
{{- define "fusion-ray.env" -}}
{{- $s := .root.Values.secrets -}}
{{- if $s.openai.name }}
- name: {{ $s.openai.env }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.openai.name }}
      key: {{ $s.openai.key }}
{{- end }}
{{- range $s.extra }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- range .root.Values.env }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- range .jobEnv }}
- {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A RayCluster spec. Argument: dict root, rc (the rayCluster settings), jobFiles (a volume source for
     /etc/fusion/jobs, or nil), jobEnv (a job's extra env). */}}
{{- define "fusion-ray.clusterSpec" -}}
{{- $root := .root -}}
{{- $rc := .rc -}}
{{- $env := include "fusion-ray.env" (dict "root" $root "jobEnv" .jobEnv) -}}
rayVersion: {{ $root.Values.rayVersion | quote }}
enableInTreeAutoscaling: true
autoscalerOptions:
  version: v2
  upscalingMode: {{ $rc.autoscaler.upscalingMode }}
  idleTimeoutSeconds: {{ $rc.autoscaler.idleTimeoutSeconds }}
  resources:
    {{- toYaml $rc.autoscaler.resources | nindent 4 }}
  securityContext:
    {{- include "fusion-ray.containerSecurityContext" $root | nindent 4 }}
headGroupSpec:
  serviceType: {{ $rc.head.serviceType }}
  rayStartParams:
    {{- toYaml $rc.head.rayStartParams | nindent 4 }}
  template:
    metadata:
      labels:
        {{- include "fusion-ray.selectorLabels" $root | nindent 8 }}
        fusion-ray/role: head
    spec:
      {{- /* the in-tree autoscaler (a sidecar of the head) scales the cluster through the API server with the
             ServiceAccount KubeRay makes for it: the head keeps its token; workers and submitters do not */}}
      securityContext:
        {{- include "fusion-ray.podSecurityContext" $root | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-head
          image: {{ include "fusion-ray.cpuImage" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - {containerPort: 6379, name: gcs-server}
            - {containerPort: 8265, name: dashboard}
            - {containerPort: 10001, name: client}
          {{- with $env }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml $rc.head.resources | nindent 12 }}
          securityContext:
            {{- include "fusion-ray.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - {name: runs, mountPath: {{ $root.Values.storage.mountPath }}}
            - {name: shm, mountPath: /dev/shm}
            {{- if .jobFiles }}
            - {name: jobs, mountPath: /etc/fusion/jobs, readOnly: true}
            {{- end }}
      volumes:
        - name: runs
          persistentVolumeClaim:
            claimName: {{ include "fusion-ray.runsClaim" $root }}
        - name: shm
          emptyDir: {medium: Memory, sizeLimit: {{ $rc.head.shmSize }}}
        {{- with .jobFiles }}
        - name: jobs
          {{- toYaml . | nindent 10 }}
        {{- end }}
      {{- with $rc.head.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $rc.head.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $rc.head.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if or $rc.cpuWorkers.enabled $rc.gpuWorkers.enabled }}
workerGroupSpecs:
{{- range $kind := list "cpu" "gpu" }}
{{- $g := ternary $rc.cpuWorkers $rc.gpuWorkers (eq $kind "cpu") }}
{{- if $g.enabled }}
  - groupName: {{ $g.groupName }}
    replicas: {{ $g.minReplicas }}
    minReplicas: {{ $g.minReplicas }}
    maxReplicas: {{ $g.maxReplicas }}
    rayStartParams: {}
    template:
      metadata:
        labels:
          {{- include "fusion-ray.selectorLabels" $root | nindent 10 }}
          fusion-ray/role: {{ $kind }}-worker
      spec:
        automountServiceAccountToken: false
        securityContext:
          {{- include "fusion-ray.podSecurityContext" $root | nindent 10 }}
        {{- with $root.Values.imagePullSecrets }}
        imagePullSecrets:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        containers:
          - name: ray-worker
            image: {{ ternary (include "fusion-ray.cpuImage" $root) (include "fusion-ray.gpuImage" $root) (eq $kind "cpu") }}
            imagePullPolicy: {{ $root.Values.image.pullPolicy }}
            {{- with $env }}
            env:
              {{- . | nindent 14 }}
            {{- end }}
            {{- $res := deepCopy $g.resources }}
            {{- if eq $kind "gpu" }}
            {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" ($g.gpus | toString)) ($res.limits | default dict)) }}
            {{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" ($g.gpus | toString)) ($res.requests | default dict)) }}
            {{- end }}
            resources:
              {{- toYaml $res | nindent 14 }}
            securityContext:
              {{- include "fusion-ray.containerSecurityContext" $root | nindent 14 }}
            lifecycle:
              preStop:
                exec:
                  command: ["/bin/sh", "-c", "ray stop"]
            volumeMounts:
              - {name: runs, mountPath: {{ $root.Values.storage.mountPath }}}
              - {name: shm, mountPath: /dev/shm}
        volumes:
          - name: runs
            persistentVolumeClaim:
              claimName: {{ include "fusion-ray.runsClaim" $root }}
          - name: shm
            emptyDir: {medium: Memory, sizeLimit: {{ $g.shmSize }}}
        {{- with $g.nodeSelector }}
        nodeSelector:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $g.tolerations }}
        tolerations:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $g.affinity }}
        affinity:
          {{- toYaml . | nindent 10 }}
        {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A RayJob spec (RayJob and RayCronJob.jobTemplate). Argument: dict root, job (merged), suspend. */}}
{{- define "fusion-ray.rayJobSpec" -}}
{{- $root := .root -}}
{{- $job := .job -}}
{{- $ctx := dict "root" $root "job" $job -}}
entrypoint: {{ include "fusion-ray.entrypoint" $ctx | quote }}
runtimeEnvYAML: |
  {{- toYaml ($job.runtimeEnv | default dict) | nindent 2 }}
activeDeadlineSeconds: {{ $job.activeDeadlineSeconds }}
{{- if eq $job.cluster "shared" }}
clusterSelector:
  ray.io/cluster: {{ include "fusion-ray.sharedCluster" $root }}
{{- else }}
shutdownAfterJobFinishes: {{ $job.shutdownAfterJobFinishes }}
{{- if $job.shutdownAfterJobFinishes }}
ttlSecondsAfterFinished: {{ $job.ttlSecondsAfterFinished }}
{{- end }}
backoffLimit: {{ $job.backoffLimit }}
{{- if .suspend }}
suspend: true
{{- end }}
{{- $rc := include "fusion-ray.merge" (dict "base" $root.Values.rayCluster "over" ($job.rayCluster | default dict)) | fromYaml }}
{{- $files := dict }}
{{- if not $job.jobFile }}
{{- $files = dict "configMap" (dict "name" (include "fusion-ray.jobConfigMap" $ctx)) }}
{{- end }}
rayClusterSpec:
  {{- include "fusion-ray.clusterSpec" (dict "root" $root "rc" $rc "jobFiles" $files "jobEnv" $job.env) | nindent 2 }}
{{- end }}
submitterPodTemplate:
  metadata:
    labels:
      {{- include "fusion-ray.selectorLabels" $root | nindent 6 }}
      fusion-ray/role: submitter
  spec:
    restartPolicy: Never
    automountServiceAccountToken: false
    securityContext:
      {{- include "fusion-ray.podSecurityContext" $root | nindent 6 }}
    {{- with $root.Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    containers:
      - name: ray-job-submitter
        image: {{ include "fusion-ray.cpuImage" $root }}
        imagePullPolicy: {{ $root.Values.image.pullPolicy }}
        resources:
          {{- toYaml $job.submitter.resources | nindent 10 }}
        securityContext:
          {{- include "fusion-ray.containerSecurityContext" $root | nindent 10 }}
{{- end -}}
