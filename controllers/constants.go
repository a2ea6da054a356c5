package controllers

// Annotation keys on a networking.k8s.io/v1 Ingress (DESIGN.md "The
// controller contract").
const (
	AnnotationPrefix       = "gatehouse.dev/"
	AnnEnabled             = AnnotationPrefix + "enabled"
	AnnProvider            = AnnotationPrefix + "provider"
	AnnProviderSecret      = AnnotationPrefix + "provider-secret"
	AnnAllowedGroups       = AnnotationPrefix + "allowed-groups"
	AnnAllowedEmails       = AnnotationPrefix + "allowed-emails"
	AnnAllowedEmailDomains = AnnotationPrefix + "allowed-email-domains"
	AnnSkipAuthPaths       = AnnotationPrefix + "skip-auth-paths"
	AnnSessionStore        = AnnotationPrefix + "session-store"
	AnnScopes              = AnnotationPrefix + "scopes"
	AnnPassAccessToken     = AnnotationPrefix + "pass-access-token"
	AnnRollout             = AnnotationPrefix + "rollout"
)

// Annotations and labels the controller puts on Pods it injects (never on
// users' Ingresses, Services or workloads).
const (
	// PodAnnIngress names the Ingress whose sidecar a Pod carries.
	PodAnnIngress = AnnotationPrefix + "ingress"
	// PodAnnConfigHash is a hash of the sidecar as injected; a Pod whose
	// hash differs from the current one is replaced on rollout.
	PodAnnConfigHash = AnnotationPrefix + "config-hash"
	// NamespaceInjectionLabel set to "disabled" on a Namespace keeps the
	// webhook away from it.
	NamespaceInjectionLabel = AnnotationPrefix + "injection"
	// SecretLabelIngress marks the per-Ingress Secret the controller owns.
	SecretLabelIngress = AnnotationPrefix + "ingress"
	// SecretAnnRotate on a per-Ingress Secret asks for a new cookie secret:
	// the controller puts a new one on the first line, keeps the previous
	// one as the second (still accepted), and removes the annotation.
	SecretAnnRotate = AnnotationPrefix + "rotate-cookie-secret"
)

// Names of what the controller creates.
const (
	// SidecarName is the injected init container's name.
	SidecarName = "gatehouse"
	// SidecarCommand is the sidecar build of the gatehouse binary in the
	// image (built with the "sidecar" tag, without the controller).
	SidecarCommand = "/usr/local/bin/gatehouse-sidecar"
	// SecretVolumeName is the Pod volume holding the per-Ingress Secret.
	SecretVolumeName = "gatehouse-secret"
	// SecretMountPath is where the sidecar finds its files.
	SecretMountPath = "/etc/gatehouse"
	// FieldManager is the server-side apply field manager.
	FieldManager = "gatehouse"
	// SidecarPort is the sidecar's first choice of listening port.
	SidecarPort = 4180
	// SidecarMetricsPort is the sidecar's first choice of metrics port.
	SidecarMetricsPort = 9090
)

// Keys of the per-Ingress Secret.
const (
	SecretKeyCookie        = "cookie-secret"
	SecretKeyClientSecret  = "client-secret"
	SecretKeyPolicy        = "policy.yaml"
	SecretKeyRedisPassword = "redis-password"
)

// Event reasons.
const (
	ReasonInvalidAnnotation = "InvalidAnnotation"
	ReasonUnknownProvider   = "UnknownProvider"
	ReasonNumericTargetPort = "NumericTargetPort"
	ReasonConflict          = "ConflictingIngress"
	ReasonNoHost            = "NoHost"
	ReasonInsecureHost      = "HostWithoutTLS"
	ReasonProtected         = "Protected"
	ReasonUnprotectedPods   = "UnprotectedPods"
	ReasonPodReplaced       = "PodReplaced"
	ReasonSecretError       = "SecretError"
)
