package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// sidecarSpec is everything that decides one app's sidecar. It is built by
// the reconciler and the webhook from the same inputs, so both agree, and it
// is kept as JSON in the per-Ingress Secret as the last good spec.
type sidecarSpec struct {
	// Ingress names the Ingress whose Secret the sidecar mounts, in the
	// Pod's namespace; with several Ingresses in front of one app, the
	// oldest one that has a Secret.
	Ingress         string
	Policy          Policy
	IssuerURL       string
	ClientID        string
	HasClientSecret bool
	Scopes          []string
	GroupsClaim     string
	// LogoutRedirect is empty for the proxy's default.
	LogoutRedirect   string `json:",omitempty"`
	RedisURL         string // empty: cookie store
	HasRedisPassword bool
	// RedisKeyPrefix is the namespace's own key prefix when it has a Redis
	// user of its own; empty for the proxy's default.
	RedisKeyPrefix string `json:",omitempty"`
	// Origins are the external scheme://host of every host the app is
	// reached at, sorted: one --redirect-url each.
	Origins    []string
	PathPrefix string
	// Image and Resources shape the container but not what it enforces:
	// changing them replaces no Pod (new Pods get them, old ones are
	// reported stale).
	Image     string
	Resources corev1.ResourceRequirements
	// MountPath is where the Secret's files are; SecretMountPath in Pods.
	MountPath string
	// Provider, BrokerURL and BrokerAudience are set for a provider in
	// broker mode: the sidecar holds no client secret and sends token
	// requests to BrokerURL with a projected ServiceAccount token of
	// BrokerAudience. Empty otherwise, so that specs of other modes stay
	// as earlier releases wrote them.
	Provider       string `json:",omitempty"`
	BrokerURL      string `json:",omitempty"`
	BrokerAudience string `json:",omitempty"`
}

// brokered reports whether the sidecar goes through the token broker.
func (s sidecarSpec) brokered() bool { return s.BrokerURL != "" }

// redirectURLs are the sidecar's --redirect-url values, one per origin.
func (s sidecarSpec) redirectURLs() []string {
	out := make([]string, 0, len(s.Origins))
	for _, o := range s.Origins {
		out = append(out, o+s.PathPrefix+"/callback")
	}
	return out
}

// secure reports whether every origin is https, which is what Secure (and
// __Host-) cookies need.
func (s sidecarSpec) secure() bool {
	for _, o := range s.Origins {
		if !strings.HasPrefix(o, "https://") {
			return false
		}
	}
	return len(s.Origins) > 0
}

// secretName is the per-Ingress Secret's name.
func secretName(key string) string {
	// Route keys hold underscores, which a Secret name cannot; dots keep
	// <namespace>.<name> apart (a namespace has none).
	name := "gatehouse-" + strings.ReplaceAll(key, "_", ".")
	if len(name) > 253 {
		name = name[:253]
	}
	return name
}

// proxyConfig is the sidecar's configuration for an app listening on
// appPort, with the sidecar on listen and its metrics on metrics. The
// access policy is not in it: it lives in the mounted policy file, which
// the proxy reloads when the Secret changes.
func (s sidecarSpec) proxyConfig(appPort, listen, metrics int32) proxy.Config {
	c := proxy.DefaultConfig()
	c.ListenAddress = fmt.Sprintf(":%d", listen)
	c.MetricsAddress = fmt.Sprintf(":%d", metrics)
	c.Upstream = fmt.Sprintf("http://127.0.0.1:%d", appPort)
	c.IssuerURL = s.IssuerURL
	c.ClientID = s.ClientID
	c.ClientSecretFile = proxy.PublicClient
	if s.HasClientSecret {
		c.ClientSecretFile = path.Join(s.MountPath, SecretKeyClientSecret)
	}
	if s.brokered() {
		c.ClientSecretFile = ""
		c.BrokerURL = s.BrokerURL
		c.BrokerCAFile = path.Join(s.MountPath, SecretKeyBrokerCA)
	}
	c.RedirectURLs = s.redirectURLs()
	c.CookieSecretFile = path.Join(s.MountPath, SecretKeyCookie)
	c.CookieSecure = s.secure()
	if len(s.Scopes) > 0 {
		c.Scopes = strings.Join(s.Scopes, " ")
	}
	if s.GroupsClaim != "" {
		c.GroupsClaim = s.GroupsClaim
	}
	if s.LogoutRedirect != "" {
		c.LogoutRedirect = s.LogoutRedirect
	}
	if s.RedisURL != "" {
		c.SessionStore = proxy.StoreRedis
		c.RedisURL = s.RedisURL
	}
	if s.RedisKeyPrefix != "" {
		c.RedisKeyPrefix = s.RedisKeyPrefix
	}
	c.PassAccessToken = s.Policy.PassAccessToken
	c.PathPrefix = s.PathPrefix
	c.ConfigFile = path.Join(s.MountPath, SecretKeyPolicy)
	return c
}

// validate runs the sidecar's own Validate on its configuration with the
// policy applied, so a bad annotation fails here rather than in a
// crash-looping sidecar.
func (s sidecarSpec) validate() error {
	c := s.proxyConfig(8080, SidecarPort, SidecarMetricsPort)
	c.AllowedEmails = s.Policy.AllowedEmails
	c.AllowedEmailDomains = s.Policy.AllowedEmailDomains
	c.AllowedGroups = s.Policy.AllowedGroups
	c.SkipAuthPaths = s.Policy.SkipAuthPaths
	return c.Validate()
}

// policyFile renders the live policy the sidecar reads from --config.
func policyFile(p Policy) []byte {
	b, _ := yaml.Marshal(map[string][]string{
		"allowed-emails":        nonNil(p.AllowedEmails),
		"allowed-email-domains": nonNil(p.AllowedEmailDomains),
		"allowed-groups":        nonNil(p.AllowedGroups),
		"skip-auth-path":        nonNil(p.SkipAuthPaths),
	})
	return b
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// sidecarFor renders the sidecar container for an app port, with the
// sidecar taking over portName.
func sidecarFor(s sidecarSpec, portName string, appPort, listen, metrics int32) corev1.Container {
	args := append([]string{"proxy"}, s.proxyConfig(appPort, listen, metrics).Args()...)
	c := corev1.Container{
		Name:          SidecarName,
		Image:         s.Image,
		Command:       []string{SidecarCommand},
		Args:          args,
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), // native sidecar
		Ports: []corev1.ContainerPort{
			{Name: portName, ContainerPort: listen, Protocol: corev1.ProtocolTCP},
			{Name: "gh-metrics", ContainerPort: metrics, Protocol: corev1.ProtocolTCP},
		},
		Resources: s.Resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: SecretVolumeName, MountPath: s.MountPath, ReadOnly: true},
		},
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(metrics)}},
			PeriodSeconds:    1,
			FailureThreshold: 30,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(metrics)}},
			PeriodSeconds: 5,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(metrics)}},
			PeriodSeconds: 10,
		},
		// The restricted Pod Security Standard, whatever the Pod says. No
		// fixed user: the image runs as a numeric non-root user, and
		// OpenShift's restricted SCC assigns its own from the namespace's
		// range (a fixed runAsUser outside it is refused).
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if s.brokered() {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: BrokerTokenVolumeName, MountPath: BrokerTokenMountPath, ReadOnly: true})
	}
	if s.HasRedisPassword {
		c.Env = append(c.Env, corev1.EnvVar{
			Name: "GATEHOUSE_REDIS_PASSWORD",
			ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secretName(s.Ingress)},
				Key:                  SecretKeyRedisPassword,
			}},
		})
	}
	return c
}

// inject adds the sidecar for s to pod, taking over the container port
// named portName: the app's port loses the name and the sidecar's port
// takes it, so the Service's named targetPort reaches the sidecar.
// Probes that used the name are rewritten to the app's number so the
// kubelet bypasses authentication. It reports false, changing nothing,
// when the pod already has the sidecar or no container port has the name.
func inject(pod *corev1.Pod, s sidecarSpec, portName string) bool {
	if slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SidecarName }) {
		return false
	}
	var appPort int32
	found := false
	for ci := range pod.Spec.Containers {
		for pi, p := range pod.Spec.Containers[ci].Ports {
			if p.Name == portName {
				appPort, found = p.ContainerPort, true
				pod.Spec.Containers[ci].Ports[pi].Name = ""
			}
		}
	}
	if !found {
		return false
	}
	used := map[int32]bool{}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				used[p.ContainerPort] = true
			}
		}
	}
	listen := freePort(SidecarPort, used)
	used[listen] = true
	metrics := freePort(SidecarMetricsPort, used)

	for ci := range pod.Spec.Containers {
		c := &pod.Spec.Containers[ci]
		for _, probe := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			rewriteProbe(probe, portName, appPort)
		}
		if c.Lifecycle != nil {
			for _, h := range []*corev1.LifecycleHandler{c.Lifecycle.PostStart, c.Lifecycle.PreStop} {
				if h != nil {
					rewriteProbe(&corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}}, portName, appPort)
				}
			}
		}
	}
	sc := sidecarFor(s, portName, appPort, listen, metrics)
	pod.Spec.InitContainers = append([]corev1.Container{sc}, pod.Spec.InitContainers...)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: SecretVolumeName,
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  secretName(s.Ingress),
			DefaultMode: ptr.To[int32](0o444),
		}},
	})
	if s.brokered() {
		if pod.Spec.ServiceAccountName == "" {
			// A projected token needs a named ServiceAccount. The API
			// server's ServiceAccount admission plugin names "default"
			// before webhooks run; where it is off, Gatehouse does it.
			pod.Spec.ServiceAccountName = "default"
		}
		// The kubelet writes and renews the token; it is bound to the Pod,
		// so it dies with it, and its audience is the broker's alone (the
		// API server does not accept it).
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name: BrokerTokenVolumeName,
			VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				DefaultMode: ptr.To[int32](0o444),
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience:          s.BrokerAudience,
					ExpirationSeconds: ptr.To[int64](BrokerTokenSeconds),
					Path:              "token",
				}}},
			}},
		})
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[PodAnnIngress] = s.Ingress
	pod.Annotations[PodAnnConfigHash] = s.hash()
	return true
}

// hash identifies what the sidecar enforces, ignoring ports chosen per Pod,
// the image and the resources, so that a changed provider, session store or
// host is noticed on rollout while an upgrade of Gatehouse is not. The live
// policy is not part of it either: the sidecar reloads it.
func (s sidecarSpec) hash() string {
	base := struct {
		Ingress, IssuerURL, ClientID, GroupsClaim, LogoutRedirect, RedisURL, RedisKeyPrefix, PathPrefix, MountPath string
		HasClientSecret, HasRedisPassword, PassAccessToken                                                         bool
		Scopes, Origins                                                                                            []string
	}{
		s.Ingress, s.IssuerURL, s.ClientID, s.GroupsClaim, s.LogoutRedirect, s.RedisURL, s.RedisKeyPrefix, s.PathPrefix, s.MountPath,
		s.HasClientSecret, s.HasRedisPassword, s.Policy.PassAccessToken,
		s.Scopes, s.Origins,
	}
	var b []byte
	if s.brokered() {
		// Only brokered specs hash the broker's settings, so that the hash
		// of every other spec, and with it every Pod, stays as it was.
		b, _ = json.Marshal(struct {
			Base                                any
			Provider, BrokerURL, BrokerAudience string
		}{base, s.Provider, s.BrokerURL, s.BrokerAudience})
	} else {
		b, _ = json.Marshal(base)
	}
	sum := sha256.Sum256(b)
	return "v2-" + hex.EncodeToString(sum[:8])
}

// podSidecar is the state of a Pod's Gatehouse sidecar against a spec.
type podSidecar int

const (
	sidecarMissing  podSidecar = iota // no Gatehouse sidecar
	sidecarOutdated                   // enforces something else: replace the Pod
	sidecarStale                      // enforces the spec, older image or resources: report only
	sidecarCurrent
)

// compare tells how pod's sidecar, which must have taken over portName,
// stands against s. Enforcement is matched by the config-hash annotation,
// or, for Pods injected by an older release that hashed differently, by
// the sidecar's command line with its per-Pod addresses left out and the
// Secret it mounts. A sidecar on another port is outdated: traffic to
// portName would reach the app without it.
func (s sidecarSpec) compare(pod *corev1.Pod, portName string) podSidecar {
	i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SidecarName })
	if i < 0 {
		return sidecarMissing
	}
	c := &pod.Spec.InitContainers[i]
	if len(c.Ports) == 0 || c.Ports[0].Name != portName {
		return sidecarOutdated
	}
	if pod.Annotations[PodAnnConfigHash] != s.hash() && !s.sameCommand(pod, c) {
		return sidecarOutdated
	}
	if c.Image != s.Image || !equality.Semantic.DeepEqual(c.Resources, s.Resources) {
		return sidecarStale
	}
	return sidecarCurrent
}

// sameCommand reports whether c runs the sidecar s would render, apart
// from the addresses chosen per Pod, mounting the same Secret.
func (s sidecarSpec) sameCommand(pod *corev1.Pod, c *corev1.Container) bool {
	if pod.Annotations[PodAnnIngress] != s.Ingress {
		return false
	}
	perPod := func(args []string) []string {
		return slices.DeleteFunc(slices.Clone(args), func(a string) bool {
			return strings.HasPrefix(a, "--listen-address=") || strings.HasPrefix(a, "--metrics-address=") || strings.HasPrefix(a, "--upstream=")
		})
	}
	want := append([]string{"proxy"}, s.proxyConfig(0, 0, 0).Args()...)
	return slices.Equal(perPod(c.Args), perPod(want))
}

func freePort(want int32, used map[int32]bool) int32 {
	for used[want] {
		want++
	}
	return want
}

func rewriteProbe(p *corev1.Probe, portName string, port int32) {
	if p == nil {
		return
	}
	named := func(v intstr.IntOrString) bool { return v.Type == intstr.String && v.StrVal == portName }
	if p.HTTPGet != nil && named(p.HTTPGet.Port) {
		p.HTTPGet.Port = intstr.FromInt32(port)
	}
	if p.TCPSocket != nil && named(p.TCPSocket.Port) {
		p.TCPSocket.Port = intstr.FromInt32(port)
	}
}
