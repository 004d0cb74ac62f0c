{{/* Names, labels and the few computed values every template shares. */}}

{{/* The chart name, `regcred` unless nameOverride. */}}
{{- define "regcred.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object. Truncated to 63 characters: some Kubernetes name fields are
DNS labels. A release called `regcred` gives `regcred`, so the webhook Service is
`regcred.<namespace>.svc`, the name certs/generate.sh and the dev certificate use.
*/}}
{{- define "regcred.fullname" -}}
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

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "regcred.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels selecting regcred's Pods; never change them: Deployment selectors are immutable. */}}
{{- define "regcred.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regcred.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* Labels on every object. */}}
{{- define "regcred.labels" -}}
{{ include "regcred.selectorLabels" . }}
helm.sh/chart: {{ include "regcred.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: regcred
{{- end }}

{{- define "regcred.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "regcred.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "regcred.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Namespaces never mutated, as a JSON array: kube-system always (the control plane must never
depend on this webhook), then excludeNamespaces. regcred's own namespace is added where needed.
*/}}
{{- define "regcred.excludedNamespaces" -}}
{{- prepend .Values.excludeNamespaces "kube-system" | uniq | toJson }}
{{- end }}

{{/* The ConfigMap holding registries.yaml. */}}
{{- define "regcred.registriesConfigMapName" -}}
{{- printf "%s-registries" (include "regcred.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regcred.ciTokensSecretName" -}}
{{- default (printf "%s-ci-tokens" (include "regcred.fullname" .)) .Values.ci.tokensSecret }}
{{- end }}

{{/*
The pull Secrets regcred manages, one name per registry (`regcred-<id>`), as a JSON array: the
ClusterRole's resourceNames with rbac.secretAccess names. Sorted, so renders are stable.
*/}}
{{- define "regcred.pullSecretNames" -}}
{{- $names := list }}
{{- range .Values.registries }}
{{- $names = append $names (printf "regcred-%s" .id) }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{/*
The Secrets regcred reads in its own namespace, as a JSON array: every registry's secretRef and,
with the CI API, its tokens Secret. The Role's resourceNames with rbac.secretAccess names.
*/}}
{{- define "regcred.credentialsSecretNames" -}}
{{- $names := list }}
{{- range .Values.registries }}
{{- if .secretRef }}
{{- $names = append $names .secretRef }}
{{- end }}
{{- end }}
{{- if .Values.ci.enabled }}
{{- $names = append $names (include "regcred.ciTokensSecretName" .) }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{/* The webhook Service's in-cluster DNS name: what the API server dials and the certificate names. */}}
{{- define "regcred.serviceDNSName" -}}
{{- printf "%s.%s.svc" (include "regcred.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
Names the serving certificate is valid for: the webhook Service, and the CI API's Service
(always, so turning ci.enabled on later needs no new certificate), short and long forms.
*/}}
{{- define "regcred.dnsNames" -}}
{{- $names := list }}
{{- range $svc := list (include "regcred.fullname" .) (printf "%s-ci" (include "regcred.fullname" .)) }}
{{- $names = concat $names (list (printf "%s.%s" $svc $.Release.Namespace) (printf "%s.%s.svc" $svc $.Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc $.Release.Namespace)) }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* tls.mode managed: the Secret regcred keeps its CA and serving certificate in. */}}
{{- define "regcred.webhookCertSecretName" -}}
{{- printf "%s-webhook-cert" (include "regcred.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* tls.mode managed: the names of the serving certificate, as a JSON array. */}}
{{- define "regcred.managedSANs" -}}
{{- if .Values.tls.managed.sans }}
{{- .Values.tls.managed.sans | toJson }}
{{- else }}
{{- include "regcred.dnsNames" . }}
{{- end }}
{{- end }}

{{/* The kubernetes.io/tls Secret mounted at /etc/regcred/tls. */}}
{{- define "regcred.tlsSecretName" -}}
{{- if eq .Values.tls.mode "provided" }}
{{- required "tls.provided.secretName is required with tls.mode provided" .Values.tls.provided.secretName }}
{{- else }}
{{- printf "%s-tls" (include "regcred.fullname" .) }}
{{- end }}
{{- end }}

{{/*
mode selfSigned: the CA and serving certificate, as a dict {ca.crt, tls.crt, tls.key} of PEM.

An existing Secret is reused (`lookup`), so `helm upgrade` does not churn certificates: a new
CA would have to reach the webhook configuration's caBundle and the Pods' mounted Secret at
the same moment, and it never does. Generated only when the Secret is missing or incomplete
(first install, `helm template`, or after you delete it to rotate).

The result is kept in a dict on .Values for the rest of this render: the Secret and the
webhook configuration are different templates, and two calls of genCA would give two CAs.
*/}}
{{- define "regcred.selfSignedTLS" -}}
{{- if not (hasKey .Values "__regcredSelfSignedTLS") }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "regcred.tlsSecretName" .) }}
{{- $data := dict }}
{{- if $secret }}
{{- $data = $secret.data | default dict }}
{{- end }}
{{- $tls := dict }}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") }}
{{- $tls = dict "ca.crt" (index $data "ca.crt" | b64dec) "tls.crt" (index $data "tls.crt" | b64dec) "tls.key" (index $data "tls.key" | b64dec) }}
{{- else }}
{{- $days := int .Values.tls.selfSigned.validityDays }}
{{- /* ECDSA P-256, like regcred's development certificates: small, fast, accepted everywhere. */}}
{{- $ca := genCAWithKey (printf "%s-ca" (include "regcred.fullname" .)) $days (genPrivateKey "ecdsa") }}
{{- $dns := include "regcred.dnsNames" . | fromJsonArray }}
{{- $cert := genSignedCertWithKey (include "regcred.serviceDNSName" .) nil $dns $days $ca (genPrivateKey "ecdsa") }}
{{- $tls = dict "ca.crt" $ca.Cert "tls.crt" $cert.Cert "tls.key" $cert.Key }}
{{- end }}
{{- $_ := set .Values "__regcredSelfSignedTLS" $tls }}
{{- end }}
{{- toJson (get .Values "__regcredSelfSignedTLS") }}
{{- end }}

{{/* Base64 PEM for the webhook configuration's caBundle; empty with certManager (injected). */}}
{{- define "regcred.caBundle" -}}
{{- if eq .Values.tls.mode "selfSigned" }}
{{- index (include "regcred.selfSignedTLS" . | fromJson) "ca.crt" | b64enc }}
{{- else if eq .Values.tls.mode "provided" }}
{{- required "tls.provided.caBundle is required with tls.mode provided" .Values.tls.provided.caBundle }}
{{- end }}
{{- end }}

{{/* The Issuer signing the serving certificate in mode certManager. */}}
{{- define "regcred.certManagerIssuerRef" -}}
{{- if .Values.tls.certManager.issuerRef.name -}}
name: {{ .Values.tls.certManager.issuerRef.name }}
kind: {{ .Values.tls.certManager.issuerRef.kind | default "Issuer" }}
group: {{ .Values.tls.certManager.issuerRef.group | default "cert-manager.io" }}
{{- else -}}
name: {{ include "regcred.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- end }}
{{- end }}

{{/*
Every validation that crosses values. A template rather than the schema so the message can
say what to do.
*/}}
{{- define "regcred.validate" -}}
{{- if and .Values.hostNetwork (eq (int .Values.webhook.port) 10250) }}
{{- fail "hostNetwork: true needs webhook.port other than 10250, which the kubelet already listens on on every node (e.g. --set webhook.port=10260)" }}
{{- end }}
{{- if and .Values.ci.enabled (or (eq (int .Values.ci.port) (int .Values.webhook.port)) (eq (int .Values.ci.port) (int .Values.metrics.port))) }}
{{- fail "ci.port must differ from webhook.port and metrics.port" }}
{{- end }}
{{- if eq (int .Values.webhook.port) (int .Values.metrics.port) }}
{{- fail "metrics.port must differ from webhook.port" }}
{{- end }}
{{- if and .Values.ci.ingress.enabled (not .Values.ci.enabled) }}
{{- fail "ci.ingress.enabled needs ci.enabled" }}
{{- end }}
{{- if and .Values.ci.ingress.enabled (not .Values.ci.ingress.hosts) }}
{{- fail "ci.ingress.hosts needs at least one host name" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: without it every replica refreshes and they rewrite each other's Secrets" }}
{{- end }}
{{- range $index, $registry := .Values.registries }}
{{- /* Not a schema "not": its error reads "'not' failed". The wording is check-config's. */}}
{{- if contains "://" (toString $registry.url) }}
{{- fail (printf "registries[%d].url: must not contain a scheme (write registry.example.com/team, not https://...)" $index) }}
{{- end }}
{{- end }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add (int .Values.shutdownDelaySeconds) 27) }}
{{- fail "terminationGracePeriodSeconds must be at least shutdownDelaySeconds + 27 (20 s drain, 5 s to stop, 2 s to exit)" }}
{{- end }}
{{- end }}

{{/* The ValidatingAdmissionPolicy on regcred's Secret writes, and its binding. */}}
{{- define "regcred.secretWritePolicyName" -}}
{{- printf "%s-secret-writes" (include "regcred.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
