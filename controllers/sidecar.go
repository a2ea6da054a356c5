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
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// sidecarUID is the distroless "nonroot" user the image runs as.
const sidecarUID = 65532

// sidecarSpec is everything that decides one Ingress's sidecar. It is built
// by the reconciler and the webhook from the same inputs, so both agree.
type sidecarSpec struct {
	Ingress         string // name, in the Pod's namespace
	Policy          Policy
	IssuerURL       string
	ClientID        string
	HasClientSecret bool
	Scopes          []string
	GroupsClaim     string
	// LogoutRedirect is empty for the proxy's default. Fields added after
	// the first release are omitempty, so that hash stays the same for Pods
	// that do not use them and a controller upgrade replaces no Pods.
	LogoutRedirect   string `json:",omitempty"`
	RedisURL         string // empty: cookie store
	HasRedisPassword bool
	Hosts            []string
	Secure           bool // every host has TLS
	PathPrefix       string
	Image            string
	Resources        corev1.ResourceRequirements
	// MountPath is where the Secret's files are; SecretMountPath in Pods.
	MountPath string
}

// secretName is the per-Ingress Secret's name.
func secretName(ingress string) string {
	name := "gatehouse-" + ingress
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
	scheme := "https"
	if !s.Secure {
		scheme = "http"
	}
	for _, h := range s.Hosts {
		c.RedirectURLs = append(c.RedirectURLs, scheme+"://"+h+s.PathPrefix+"/callback")
	}
	c.CookieSecretFile = path.Join(s.MountPath, SecretKeyCookie)
	c.CookieSecure = s.Secure
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
		// The restricted Pod Security Standard, whatever the Pod says.
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](sidecarUID),
			RunAsGroup:               ptr.To[int64](sidecarUID),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
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
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[PodAnnIngress] = s.Ingress
	pod.Annotations[PodAnnConfigHash] = s.hash()
	return true
}

// hash identifies the sidecar configuration, ignoring ports chosen per
// Pod, so that a changed provider or session store is noticed on rollout.
// The live policy is not part of it: the sidecar reloads it.
func (s sidecarSpec) hash() string {
	x := s
	x.Policy = Policy{PassAccessToken: s.Policy.PassAccessToken}
	b, _ := json.Marshal(x)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
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
