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
	AnnExternalScheme      = AnnotationPrefix + "external-scheme"
	// AnnSidecarResources sets the sidecar's resources; on a Namespace it
	// is the default for the namespace's Ingresses.
	AnnSidecarResources = AnnotationPrefix + "sidecar-resources"
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
	// webhook away from it; "enabled" puts the namespace in the webhook's
	// scope even before it has an enabled Ingress.
	NamespaceInjectionLabel = AnnotationPrefix + "injection"
	// SecretLabelIngress marks the per-Ingress Secret the controller owns.
	SecretLabelIngress = AnnotationPrefix + "ingress"
	// SecretAnnRotate on a per-Ingress Secret asks for a new cookie secret:
	// the controller puts a new one on the first line, keeps the previous
	// one as the second (still accepted), and removes the annotation.
	SecretAnnRotate = AnnotationPrefix + "rotate-cookie-secret"
	// SecretAnnUnusedSince on a per-Ingress Secret records when it stopped
	// being needed (its Ingress gone or disabled, no Pod mounting it); the
	// controller deletes it once --secret-retention has passed, and a
	// recreated Ingress of the same name adopts it before then.
	SecretAnnUnusedSince = AnnotationPrefix + "unused-since"
	// SecretAnnState, SecretAnnProblem and SecretAnnRollout on a
	// per-Ingress Secret are the controller's own view of its Ingress, for
	// gatehouse status.
	SecretAnnState   = AnnotationPrefix + "state"
	SecretAnnProblem = AnnotationPrefix + "problem"
	SecretAnnRollout = AnnotationPrefix + "rollout"
	// SecretAnnCreated records when the controller made a per-Ingress
	// Secret, to the nanosecond (creationTimestamp has whole seconds): of
	// several Ingresses in front of one app, Pods mount the oldest Secret.
	SecretAnnCreated = AnnotationPrefix + "created"
	// SecretAnnHTTPRoute on the Secret of an HTTPRoute's backends names the
	// route, <namespace>/<name>.
	SecretAnnHTTPRoute = AnnotationPrefix + "httproute"
	// SecretAnnStalePods counts the Pods whose sidecar enforces the
	// current settings with an older image or other resources.
	SecretAnnStalePods = AnnotationPrefix + "stale-pods"
	// SecretAnnRegistryMAC on the Secret of a brokered front door
	// authenticates its callback URLs for the broker registry: only
	// Secrets with a MAC that the controller's key makes count.
	SecretAnnRegistryMAC = AnnotationPrefix + "registry-mac"
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
	// SecretKeyLastGood holds the Ingress's own sidecar spec (JSON) as it
	// was when its settings were last good and agreed with the other
	// Ingresses in front of the same Services. While a later edit is
	// refused or conflicts, Pods keep getting this one.
	SecretKeyLastGood = "last-good.json"
	// SecretKeyBrokerCA is the CA bundle the token broker's certificate
	// chains to, for sidecars of a provider in broker mode (which hold no
	// client secret).
	SecretKeyBrokerCA = "broker-ca.crt" //nolint:gosec // a key name, not a credential
)

// The projected ServiceAccount token with which a sidecar in broker mode
// authenticates to gatehouse broker.
const (
	// BrokerTokenVolumeName is the Pod volume holding the token.
	BrokerTokenVolumeName = "gatehouse-broker-token"
	// BrokerTokenMountPath is where the sidecar finds it, as "token": the
	// proxy's default --broker-token-file.
	BrokerTokenMountPath = "/var/run/secrets/gatehouse.dev/broker" //nolint:gosec // a path, not a credential
	// BrokerTokenSeconds is the token's lifetime, the least the API server
	// allows: the kubelet renews it at 80%, and a token copied out of a Pod
	// is useless ten minutes later.
	BrokerTokenSeconds = 600
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
	ReasonLastGoodKept      = "LastGoodSpecKept"
	ReasonPodsRefused       = "PodsRefused"
	ReasonUnmanagedPod      = "UnmanagedPod"
	ReasonRolloutBlocked    = "RolloutBlocked"
	ReasonStalePods         = "StaleSidecars"
)
