{{/*
The chart's name, overridable with nameOverride.
*/}}
{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name every object starts with: the release name, with
the chart's name appended unless the release name already contains it
(`helm install gatehouse ...` gives "gatehouse"). Capped at 50 characters so
that the longest derived name ("<fullname>-webhook-tls") stays within 63.
*/}}
{{- define "gatehouse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "gatehouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ include "gatehouse.chart" . }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gatehouse
{{- end }}

{{/*
Labels that select the release's objects. Each object adds its
app.kubernetes.io/component.
*/}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the controller's Pods, which the Services and the
PodDisruptionBudget select.
*/}}
{{- define "gatehouse.controllerSelectorLabels" -}}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
The controller's ServiceAccount.
*/}}
{{- define "gatehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gatehouse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
helm test's ServiceAccount, ClusterRole and ClusterRoleBinding: the test
Pod reads the chart's MutatingWebhookConfiguration with it.
*/}}
{{- define "gatehouse.testName" -}}
{{- printf "%s-test" (include "gatehouse.fullname" .) }}
{{- end }}

{{/*
"true" when helm test checks the caBundle the API server has
(webhook-check --webhook-configuration), which needs the chart to create
the test's ServiceAccount and RBAC; empty when it falls back to the CA in
the webhook's Secret (--ca-file).
*/}}
{{- define "gatehouse.testReadsWebhookConfiguration" -}}
{{- if and .Values.rbac.create .Values.serviceAccount.create }}true{{ end }}
{{- end }}

{{/*
The image, by digest when image.digest is set, else by tag (default the
chart's appVersion). The controller injects the same image as the sidecar.
*/}}
{{- define "gatehouse.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Names of the webhook's objects. The controller's self-made certificate
lives in the Secret "<webhook Service>-tls" (--webhook-service); with
cert-manager the Certificate writes the same Secret.
*/}}
{{- define "gatehouse.webhookServiceName" -}}
{{- printf "%s-webhook" (include "gatehouse.fullname" .) }}
{{- end }}

{{- define "gatehouse.webhookSecretName" -}}
{{- printf "%s-tls" (include "gatehouse.webhookServiceName" .) }}
{{- end }}

{{- define "gatehouse.webhookConfigurationName" -}}
{{- include "gatehouse.fullname" . }}
{{- end }}

{{- define "gatehouse.metricsServiceName" -}}
{{- printf "%s-metrics" (include "gatehouse.fullname" .) }}
{{- end }}

{{- define "gatehouse.configMapName" -}}
{{- printf "%s-config" (include "gatehouse.fullname" .) }}
{{- end }}

{{/*
Names of the token broker's objects. Its serving certificate lives in
"<broker Service>-tls", made by the controller from its own CA or, with
cert-manager, by a Certificate.
*/}}
{{- define "gatehouse.brokerName" -}}
{{- printf "%s-broker" (include "gatehouse.fullname" .) }}
{{- end }}

{{- define "gatehouse.brokerSecretName" -}}
{{- printf "%s-tls" (include "gatehouse.brokerName" .) }}
{{- end }}

{{- define "gatehouse.brokerRegistryName" -}}
{{- printf "%s-registry" (include "gatehouse.brokerName" .) }}
{{- end }}

{{- define "gatehouse.brokerCertDir" -}}
/etc/gatehouse-broker-tls
{{- end }}

{{/*
Labels of the broker's Pods, which its Service and PodDisruptionBudget
select.
*/}}
{{- define "gatehouse.brokerSelectorLabels" -}}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "gatehouse.certificateName" -}}
{{- printf "%s-webhook" (include "gatehouse.fullname" .) }}
{{- end }}

{{- define "gatehouse.issuerName" -}}
{{- printf "%s-selfsigned" (include "gatehouse.fullname" .) }}
{{- end }}

{{/*
Where the controller reads its --config file and, with cert-manager, the
webhook's certificate.
*/}}
{{- define "gatehouse.configDir" -}}
/etc/gatehouse
{{- end }}

{{- define "gatehouse.webhookCertDir" -}}
/etc/gatehouse-webhook-tls
{{- end }}

{{/*
The identity providers as a JSON list: the "provider" shorthand (one
provider, named "default" unless provider.name says otherwise) followed by
the "providers" list, each entry exactly as the controller's --config file
reads it. With broker.enabled, a provider with a client secret or a
private key (clientKeyRef) and no clientSecretMode is in broker mode. Fails
with a message naming the value when the list is empty, a name is used
twice, or a provider's credential needs the broker it does not have.
*/}}
{{- define "gatehouse.providers" -}}
{{- $all := list }}
{{- $p := .Values.provider }}
{{- if or $p.issuerURL $p.clientID $p.clientSecret.name }}
{{- $one := dict "name" (default "default" $p.name) "issuerURL" (required "provider.issuerURL: required with the provider shorthand" $p.issuerURL) "clientID" (required "provider.clientID: required with the provider shorthand" $p.clientID) }}
{{- if $p.clientSecret.name }}
{{- $_ := set $one "clientSecretRef" (dict "name" $p.clientSecret.name "key" (default "client-secret" $p.clientSecret.key)) }}
{{- end }}
{{- range $key := list "scopes" "groupsClaim" "logoutRedirect" "allowedNamespaces" "sessionStore" "clientSecretMode" "clientKeyRef" "clientKeyID" }}
{{- if hasKey $p $key }}
{{- $_ := set $one $key (get $p $key) }}
{{- end }}
{{- end }}
{{- $all = append $all $one }}
{{- end }}
{{- range .Values.providers }}
{{- $all = append $all (deepCopy .) }}
{{- end }}
{{- /*
A provider without clientSecretMode is in broker mode when the broker runs,
unless the live release has it with a client secret outside broker mode (an
upgrade from a release before the broker, or one installed with copy):
switching replaces the provider's Pods, so it happens only when values ask
for it. A provider with a private key (clientKeyRef) is always in broker
mode: only the broker can sign with the key.
*/}}
{{- $live := dict }}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace (include "gatehouse.configMapName" .) }}
{{- with (dig "data" "config.yaml" "" $cm) }}
{{- range (dig "providers" list (fromYaml .)) }}
{{- if .clientSecretRef }}
{{- $_ := set $live (toString .name) (default "copy" .clientSecretMode) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $all }}
{{- if and $.Values.broker.enabled .clientKeyRef (not .clientSecretMode) }}
{{- $_ := set . "clientSecretMode" "broker" }}
{{- else if and $.Values.broker.enabled .clientSecretRef (not .clientSecretMode) }}
{{- $_ := set . "clientSecretMode" (get $live .name | default "broker") }}
{{- end }}
{{- if and (eq (default "" .clientSecretMode) "broker") (not $.Values.broker.enabled) }}
{{- fail (printf "providers: %q has clientSecretMode broker, which needs broker.enabled" .name) }}
{{- end }}
{{- if .clientKeyRef }}
{{- if .clientSecretRef }}
{{- fail (printf "providers: %q has clientKeyRef and a client secret; a provider authenticates with one credential, so keep one" .name) }}
{{- end }}
{{- if ne (default "" .clientSecretMode) "broker" }}
{{- fail (printf "providers: %q has clientKeyRef, which needs clientSecretMode broker and broker.enabled: only gatehouse broker signs with the key" .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $all }}
{{- fail "no identity provider: set provider.issuerURL, provider.clientID and provider.clientSecret.name, or list them under providers (see the chart's values.yaml)" }}
{{- end }}
{{- $seen := dict }}
{{- range $all }}
{{- if hasKey $seen .name }}
{{- fail (printf "providers: the name %q is used twice (the provider shorthand is named %q)" .name (default "default" $p.name)) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- toJson $all }}
{{- end }}

{{/*
The Secrets the broker reads, as a sorted JSON list of names: those that
providers in broker mode name in clientSecretRef or clientKeyRef. The
broker's Role grants these by name and no other Secret.
*/}}
{{- define "gatehouse.brokerSecretNames" -}}
{{- $names := list }}
{{- range (include "gatehouse.providers" . | fromJsonArray) }}
{{- if eq (default "" .clientSecretMode) "broker" }}
{{- with .clientSecretRef }}
{{- $names = append $names .name }}
{{- end }}
{{- with .clientKeyRef }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{/*
The controller's --config file (controllers.FileConfig): the providers and
the defaults every annotated Ingress starts from. defaults.provider falls
back to the first provider, so `gatehouse.dev/enabled: "true"` alone works.
*/}}
{{- define "gatehouse.fileConfig" -}}
{{- $providers := include "gatehouse.providers" . | fromJsonArray }}
{{- $names := list }}
{{- range $providers }}
{{- $names = append $names .name }}
{{- end }}
{{- $default := default (first $names) .Values.defaults.provider }}
{{- if not (has $default $names) }}
{{- fail (printf "defaults.provider: %q is not a configured provider (known: %s)" $default (join ", " $names)) }}
{{- end }}
{{- $defaults := dict "provider" $default "pathPrefix" .Values.defaults.pathPrefix }}
{{- $sidecar := dict }}
{{- with .Values.defaults.sidecar.resources }}
{{- $_ := set $sidecar "resources" . }}
{{- end }}
{{- with .Values.defaults.sidecar.resourceBounds }}
{{- $_ := set $sidecar "resourceBounds" . }}
{{- end }}
{{- with $sidecar }}
{{- $_ := set $defaults "sidecar" . }}
{{- end }}
{{- toYaml (dict "providers" $providers "defaults" $defaults) }}
{{- end }}

{{/*
The values of the webhook's `kubernetes.io/metadata.name In` requirement,
as a JSON list. The controller keeps them the names of the namespaces
Gatehouse protects; the chart renders the placeholder "gatehouse_none"
(which no namespace name can be) on a fresh install and under helm template,
and on helm upgrade the live configuration's values, so that an upgrade
never leaves protected namespaces outside the webhook until the controller
puts them back.
*/}}
{{- define "gatehouse.protectedNamespaces" -}}
{{- $values := list "gatehouse_none" }}
{{- $live := lookup "admissionregistration.k8s.io/v1" "MutatingWebhookConfiguration" "" (include "gatehouse.webhookConfigurationName" .) }}
{{- range (dig "webhooks" list $live) }}
{{- if eq (dig "name" "" .) "pods.gatehouse.dev" }}
{{- range (dig "namespaceSelector" "matchExpressions" list .) }}
{{- if and (eq (dig "key" "" .) "kubernetes.io/metadata.name") (eq (dig "operator" "" .) "In") (dig "values" list .) }}
{{- $values = .values }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $values }}
{{- end }}

{{/*
The controller Pods' affinity: .Values.affinity, plus, unless it sets
podAntiAffinity, the default spread: never two replicas on one node
(required) and, where possible, not in one zone (preferred). matchLabelKeys
pod-template-hash lets a rolling update's new Pod share a node with an old
one, so an upgrade does not need a spare node.
*/}}
{{- define "gatehouse.affinity" -}}
{{- include "gatehouse.spread" (dict "affinity" .Values.affinity "selector" (include "gatehouse.controllerSelectorLabels" . | fromYaml)) }}
{{- end }}

{{/*
An affinity with the default spread of the Pods that selector matches,
unless the affinity sets podAntiAffinity itself.
*/}}
{{- define "gatehouse.spread" -}}
{{- $affinity := deepCopy .affinity }}
{{- if not (hasKey $affinity "podAntiAffinity") }}
{{- $selector := dict "matchLabels" .selector }}
{{- $_ := set $affinity "podAntiAffinity" (dict
  "requiredDuringSchedulingIgnoredDuringExecution" (list (dict "labelSelector" $selector "matchLabelKeys" (list "pod-template-hash") "topologyKey" "kubernetes.io/hostname"))
  "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" (dict "labelSelector" $selector "matchLabelKeys" (list "pod-template-hash") "topologyKey" "topology.kubernetes.io/zone")))
) }}
{{- end }}
{{- toYaml $affinity }}
{{- end }}

{{/*
The controller Pods' PriorityClass: priorityClassName, which names the
chart's own class when priorityClass.create (default the object name
prefix); empty means none.
*/}}
{{- define "gatehouse.priorityClassName" -}}
{{- if .Values.priorityClass.create }}
{{- default (include "gatehouse.fullname" .) .Values.priorityClassName }}
{{- else }}
{{- .Values.priorityClassName }}
{{- end }}
{{- end }}
