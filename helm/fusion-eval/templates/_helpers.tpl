{{/* Names and labels ------------------------------------------------------------------------------ */}}

{{- define "fusion-eval.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fusion-eval.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fusion-eval.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A label value: [A-Za-z0-9_.-], at most 63 characters, alphanumeric at both ends. */}}
{{- define "fusion-eval.labelValue" -}}
{{- $v := regexReplaceAll "[^A-Za-z0-9_.-]+" (toString .) "-" | trunc 63 -}}
{{- regexReplaceAll "^[^A-Za-z0-9]+|[^A-Za-z0-9]+$" $v "" -}}
{{- end -}}

{{- define "fusion-eval.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fusion-eval.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fusion-eval.labels" -}}
{{ include "fusion-eval.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fusion
helm.sh/chart: {{ include "fusion-eval.chart" . }}
fusion-eval/sweep: {{ include "fusion-eval.labelValue" .Values.sweep.name }}
{{- end -}}

{{/* Image, pinned by tag (never latest) and, when given, by digest. */}}
{{- define "fusion-eval.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: \"latest\" is not allowed; pin a version (and preferably image.digest)" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "fusion-eval.pullPolicy" -}}
{{- if and .Values.image.pullPolicy (ne .Values.image.pullPolicy "Always") (not .Values.image.digest) -}}
{{- fail (printf "image.pullPolicy: %s needs image.digest (a tag alone can be moved in the registry); set the digest, or leave pullPolicy empty" .Values.image.pullPolicy) -}}
{{- end -}}
{{- .Values.image.pullPolicy | default (ternary "IfNotPresent" "Always" (not (empty .Values.image.digest))) -}}
{{- end -}}

{{/* Where shards publish: <volume mount or object-store uri>/<sweep name>. */}}
{{- define "fusion-eval.resultsRoot" -}}
{{- if eq .Values.results.type "objectStore" -}}
{{- $uri := required "results.objectStore.uri: required when results.type is objectStore (s3://bucket/prefix or gs://bucket/prefix)" .Values.results.objectStore.uri -}}
{{- printf "%s/%s" (trimSuffix "/" $uri) .Values.sweep.name -}}
{{- else -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.results.volume.mountPath) .Values.sweep.name -}}
{{- end -}}
{{- end -}}

{{/* Seconds the merge Job waits for every shard (merge.waitSeconds, default the items' deadline + 600). */}}
{{- define "fusion-eval.mergeWait" -}}
{{- if kindIs "invalid" .Values.merge.waitSeconds -}}
{{- add (int64 .Values.job.activeDeadlineSeconds) 600 -}}
{{- else -}}
{{- int64 .Values.merge.waitSeconds -}}
{{- end -}}
{{- end -}}

{{- define "fusion-eval.resultsClaim" -}}
{{- .Values.results.volume.existingClaim | default (printf "%s-results" (include "fusion-eval.fullname" .)) -}}
{{- end -}}

{{/*
The sweep, expanded: {"items": [...]} as JSON, one item per model x benchmark (x language) x sampling:
  key      <model label>/<benchmark>[-<language>]/<sampling name>  (its folder under the results root)
  jobName  a DNS label <= 63: sanitized release, label, benchmark, sampling + 8 hex of the full item id
  labels   model, benchmark, sampling label values
  gpus     GPUs of its pods
  resources
  job      its eval job file (the project's schema: kind eval, one model, one benchmark, one sampling)
*/}}
{{- define "fusion-eval.items" -}}
{{- $sw := .Values.sweep -}}
{{- $fullname := include "fusion-eval.fullname" . -}}
{{- $items := list -}}
{{- $allLanguages := list "java" "js" "cpp" "php" "swift" "rs" -}}
{{- $aliases := dict "javascript" "js" "c++" "cpp" "rust" "rs" -}}
{{- $labels := list -}}
{{- range $m := $sw.models -}}
{{- if has $m.label $labels -}}
{{- fail (printf "sweep.models: label %q used twice; give each model its own label" $m.label) -}}
{{- end -}}
{{- $labels = append $labels $m.label -}}
{{- end -}}
{{- $benchNames := list -}}
{{- range $i, $b := $sw.benchmarks -}}
{{- if and (ne $b.name "multiple") (hasKey $b "languages") -}}
{{- fail (printf "sweep.benchmarks[%d]: languages is for the multiple benchmark only (%s is Python)" $i $b.name) -}}
{{- end -}}
{{- if has $b.name $benchNames -}}
{{- fail (printf "sweep.benchmarks: %q listed twice" $b.name) -}}
{{- end -}}
{{- $benchNames = append $benchNames $b.name -}}
{{- end -}}
{{- $samplingNames := list -}}
{{- range $s := $sw.sampling -}}
{{- if has $s.name $samplingNames -}}
{{- fail (printf "sweep.sampling: name %q used twice; give each setting its own name" $s.name) -}}
{{- end -}}
{{- $samplingNames = append $samplingNames $s.name -}}
{{- end -}}
{{- $manySamplings := gt (len $sw.sampling) 1 -}}
{{- range $m := $sw.models -}}
  {{- /* the backend, in the project's job-file form, and the GPUs of its pods */ -}}
  {{- $backend := $m.backend -}}
  {{- if kindIs "string" $backend -}}
    {{- if ne $backend "embedded" -}}
      {{- $backend = dict "kind" "vllm" "model" $backend -}}
    {{- end -}}
  {{- else -}}
    {{- $backend = deepCopy $backend -}}
  {{- end -}}
  {{- $gpus := 0 -}}
  {{- if and (kindIs "map" $backend) (eq (toString $backend.kind) "vllm") -}}
    {{- $tp := int ($backend.tensor_parallel_size | default 1) -}}
    {{- if not (kindIs "invalid" $m.gpus) -}}
      {{- $gpus = int $m.gpus -}}
    {{- else if not (kindIs "invalid" $backend.num_gpus) -}}
      {{- $gpus = int (ceil (mulf $backend.num_gpus $tp)) -}}
    {{- else -}}
      {{- $gpus = $tp -}}
    {{- end -}}
    {{- if kindIs "invalid" $backend.num_gpus -}}
      {{- $_ := set $backend "num_gpus" (ternary 1 0 (gt $gpus 0)) -}}
    {{- end -}}
  {{- else if not (kindIs "invalid" $m.gpus) -}}
    {{- $gpus = int $m.gpus -}}
  {{- end -}}
  {{- $resources := deepCopy ($m.resources | default (ternary $.Values.gpu.resources $.Values.pod.resources (gt $gpus 0))) -}}
  {{- if gt $gpus 0 -}}
    {{- $_ := set $resources "limits" (merge (dict $.Values.gpu.resourceName $gpus) ($resources.limits | default dict)) -}}
    {{- $_ := set $resources "requests" (merge (dict $.Values.gpu.resourceName $gpus) ($resources.requests | default dict)) -}}
  {{- end -}}
  {{- range $b := $sw.benchmarks -}}
    {{- $languages := list "" -}}
    {{- if eq $b.name "multiple" -}}
      {{- $languages = list -}}
      {{- range $lang := ($b.languages | default $allLanguages) -}}
        {{- $key := lower (toString $lang) -}}
        {{- $languages = append $languages (get $aliases $key | default $key) -}}
      {{- end -}}
    {{- end -}}
    {{- range $lang := $languages -}}
      {{- $bench := dict "name" $b.name -}}
      {{- $benchKey := $b.name -}}
      {{- if $lang -}}
        {{- $_ := set $bench "languages" (list $lang) -}}
        {{- $benchKey = printf "%s-%s" $b.name $lang -}}
      {{- end -}}
      {{- range $field := list "limit" "tasks" "path" "max_tokens" "answer_pattern" "judge" "judge_max_tokens" "references" "category_temperatures" -}}
        {{- if and (hasKey $b $field) (not (kindIs "invalid" (index $b $field))) -}}
          {{- $_ := set $bench $field (index $b $field) -}}
        {{- end -}}
      {{- end -}}
      {{- if and (eq $b.name "multiple") (not (hasKey $bench "path")) $.Values.data.multiplePath -}}
        {{- $_ := set $bench "path" $.Values.data.multiplePath -}}
      {{- end -}}
      {{- range $s := $sw.sampling -}}
        {{- $key := printf "%s/%s/%s" $m.label $benchKey $s.name -}}
        {{- $id := printf "%s/%s/%s" $fullname $sw.name $key -}}
        {{- $base := regexReplaceAll "[^a-z0-9-]+" (printf "%s-%s-%s-%s" $fullname $m.label $benchKey $s.name | lower) "-" | trunc 54 -}}
        {{- $base = regexReplaceAll "-+$" $base "" -}}
        {{- $jobName := printf "%s-%s" $base (sha256sum $id | trunc 8) -}}
        {{- $model := dict "label" (ternary (printf "%s+%s" $m.label $s.name) $m.label $manySamplings) "backend" $backend -}}
        {{- range $field := list "prompt" "template" -}}
          {{- if get $m $field -}}
            {{- $_ := set $model $field (get $m $field) -}}
          {{- end -}}
        {{- end -}}
        {{- $sampling := omit $s "name" -}}
        {{- $sandbox := merge (dict "isolation" "pod") (omit ($sw.sandbox | default dict) "isolation") -}}
        {{- $job := dict "kind" "eval" "name" $jobName "seed" (int ($sw.seed | default 0)) "output_dir" "/scratch/run" "models" (list $model) "benchmarks" (list $bench) "sampling" $sampling "sandbox" $sandbox -}}
        {{- if $sw.ray -}}
          {{- $_ := set $job "ray" $sw.ray -}}
        {{- end -}}
        {{- $itemLabels := dict "model" (include "fusion-eval.labelValue" $m.label) "benchmark" (include "fusion-eval.labelValue" $benchKey) "sampling" (include "fusion-eval.labelValue" $s.name) -}}
        {{- $items = append $items (dict "key" $key "jobName" $jobName "labels" $itemLabels "gpus" $gpus "resources" $resources "job" $job) -}}
      {{- end -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- dict "items" $items | toJson -}}
{{- end -}}

{{/* Container security context: non-root, read-only root, no privilege escalation, no capabilities. */}}
{{- define "fusion-eval.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.pod.runAsUser }}
runAsGroup: {{ .Values.pod.runAsGroup }}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "fusion-eval.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.pod.runAsUser }}
runAsGroup: {{ .Values.pod.runAsGroup }}
fsGroup: {{ .Values.pod.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Environment of sweep pods (models true) and merge pods (models false): writable HOME/TMPDIR on emptyDirs;
credentials only by reference to existing Secrets, and model API keys only where models run.
Argument: dict "ctx" $ "models" bool.
*/}}
{{- define "fusion-eval.env" -}}
{{- $v := .ctx.Values -}}
- name: HOME
  value: /home/fusion
- name: TMPDIR
  value: /tmp
- name: XDG_CACHE_HOME
  value: /home/fusion/.cache
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: FUSION_SANDBOX_ISOLATION
  value: pod
{{- if .models }}
{{- with $v.secrets.openai.name }}
- name: OPENAI_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.secrets.openai.key }}
{{- end }}
{{- with $v.secrets.huggingface.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.secrets.huggingface.key }}
{{- end }}
{{- end }}
{{- if eq $v.results.type "objectStore" }}
{{- $creds := $v.results.objectStore.credentials }}
{{- if $creds.secretName }}
{{- range $name, $key := $creds.env }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $creds.secretName }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- with $v.results.objectStore.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $v.results.objectStore.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $v.pod.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Non-empty when a credential reaches the pod as an environment variable. Argument as fusion-eval.env. */}}
{{- define "fusion-eval.secretEnv" -}}
{{- $v := .ctx.Values -}}
{{- $store := and (eq $v.results.type "objectStore") $v.results.objectStore.credentials.secretName (not (empty $v.results.objectStore.credentials.env)) -}}
{{- $extra := false -}}
{{- range $v.pod.extraEnv -}}
{{- if and .valueFrom .valueFrom.secretKeyRef -}}{{- $extra = true -}}{{- end -}}
{{- end -}}
{{- if or $store $extra (and .models (or $v.secrets.openai.name $v.secrets.huggingface.name)) -}}
yes
{{- end -}}
{{- end -}}

{{/* checkov skips, each with its reason (annotations on the Job). Argument as fusion-eval.env. */}}
{{- define "fusion-eval.checkovSkips" -}}
{{- $v := .ctx.Values -}}
{{- $skips := list -}}
{{- if not $v.image.digest -}}
{{- $skips = append $skips (printf "CKV_K8S_43=the image is pinned by its version tag %s; set image.digest to pin it by content" ($v.image.tag | default .ctx.Chart.AppVersion)) -}}
{{- end -}}
{{- if include "fusion-eval.secretEnv" . -}}
{{- $skips = append $skips "CKV_K8S_35=the OpenAI SDK, Hugging Face hub and pyarrow object-store clients read credentials from environment variables; their values come from existing Secrets by secretKeyRef" -}}
{{- end -}}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end -}}
{{- end -}}

{{/* Volume mounts of sweep and merge pods (the results volume when results.type is volume). */}}
{{- define "fusion-eval.commonMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/fusion
{{- if eq .Values.results.type "volume" }}
- name: results
  mountPath: {{ .Values.results.volume.mountPath }}
{{- else if .Values.results.objectStore.credentials.mountPath }}
- name: object-store-credentials
  mountPath: {{ .Values.results.objectStore.credentials.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "fusion-eval.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.pod.tmpSize }}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.pod.homeSize }}
{{- if eq .Values.results.type "volume" }}
- name: results
  persistentVolumeClaim:
    claimName: {{ include "fusion-eval.resultsClaim" . }}
{{- else if .Values.results.objectStore.credentials.mountPath }}
- name: object-store-credentials
  secret:
    secretName: {{ required "results.objectStore.credentials.secretName: required with credentials.mountPath" .Values.results.objectStore.credentials.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}
