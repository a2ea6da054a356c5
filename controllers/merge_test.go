package controllers

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// good is a member in front of the app through port "http" whose own
// spec asks for the test sidecar on origins, created at minute created.
func good(name string, created int, origins ...string) member {
	spec := testSpec(SecretMountPath)
	spec.Ingress = name
	spec.Origins = origins
	return member{
		fe:       frontend{Kind: "Ingress", Name: name, Key: name, Created: metav1.NewTime(time.Unix(int64(created)*60, 0))},
		res:      resolved{Enabled: true, Spec: spec},
		portName: "http",
	}
}

func withSecret(m member) member {
	m.hasSecret = true
	spec := m.res.Spec
	m.lastGood = &spec
	return m
}

func secretAt(m member, minute int) member {
	m.secretCreated = metav1.NewTime(time.Unix(int64(minute)*60, 0))
	return m
}

func blocked(m member) member {
	m.res.Blocked = true
	m.res.Spec = sidecarSpec{}
	return m
}

func TestDecide(t *testing.T) {
	t.Parallel()
	otherGroups := func(m member) member {
		m.res.Spec.Policy.AllowedGroups = []string{"other"}
		return m
	}
	otherPort := func(m member) member { m.portName = "web"; return m }
	tests := []struct {
		name    string
		members []member
		kind    verdictKind
		ingress string   // whose Secret is mounted
		origins []string // --redirect-url hosts
	}{
		{"nothing in front", nil, verdictNone, "", nil},
		{"one, no Secret yet", []member{good("a", 1, "https://a.example.com")}, verdictPending, "", nil},
		{"one with its Secret", []member{withSecret(good("a", 1, "https://a.example.com"))}, verdictInject, "a", []string{"https://a.example.com"}},
		{
			"two agreeing: merged, the oldest's Secret",
			[]member{withSecret(good("b", 2, "https://b.example.com")), withSecret(good("a", 1, "https://a.example.com", "https://b.example.com"))},
			verdictInject, "a", []string{"https://a.example.com", "https://b.example.com"},
		},
		{
			"the oldest Secret, not the oldest Ingress",
			[]member{secretAt(withSecret(good("a", 1, "https://a.example.com")), 9), secretAt(withSecret(good("b", 2, "https://b.example.com")), 3)},
			verdictInject, "b", []string{"https://a.example.com", "https://b.example.com"},
		},
		{
			"the oldest without a Secret yet: the next one's",
			[]member{withSecret(good("b", 2, "https://b.example.com")), good("a", 1, "https://a.example.com")},
			verdictInject, "b", []string{"https://a.example.com", "https://b.example.com"},
		},
		{
			"a new Ingress with other settings: the last good stays",
			[]member{withSecret(good("a", 1, "https://a.example.com")), otherGroups(good("b", 2, "https://b.example.com"))},
			verdictLastGood, "a", []string{"https://a.example.com"},
		},
		{
			"different ports: the last good stays",
			[]member{withSecret(good("a", 1, "https://a.example.com")), otherPort(good("b", 2, "https://b.example.com"))},
			verdictLastGood, "a", []string{"https://a.example.com"},
		},
		{
			"a typo in a merged Ingress: both last goods stay merged",
			[]member{withSecret(good("a", 1, "https://a.example.com")), blocked(withSecret(good("b", 2, "https://b.example.com")))},
			verdictLastGood, "a", []string{"https://a.example.com", "https://b.example.com"},
		},
		{
			"https and plain http hosts: the last good stays",
			[]member{withSecret(good("a", 1, "https://a.example.com")), good("b", 2, "http://b.internal")},
			verdictLastGood, "a", []string{"https://a.example.com"},
		},
		{"refused from the start: Pods refused", []member{blocked(good("a", 1, "https://a.example.com"))}, verdictDeny, "", nil},
		{
			"conflict and never a Secret: Pods refused",
			[]member{good("a", 1, "https://a.example.com"), otherGroups(good("b", 2, "https://b.example.com"))},
			verdictDeny, "", nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := decide(tc.members, "gatehouse:new")
			if out.kind != tc.kind {
				t.Fatalf("kind = %d, want %d (%+v)", out.kind, tc.kind, out)
			}
			if tc.kind != verdictInject && tc.kind != verdictLastGood {
				return
			}
			if out.spec.Ingress != tc.ingress || !slices.Equal(out.spec.Origins, tc.origins) {
				t.Errorf("mounts %q with origins %q; want %q with %q", out.spec.Ingress, out.spec.Origins, tc.ingress, tc.origins)
			}
			if out.portName != "http" {
				t.Errorf("port %q", out.portName)
			}
			if tc.kind == verdictLastGood && (out.problem == "" || out.reason == "" || out.spec.Image != "gatehouse:new") {
				t.Errorf("last good outcome %+v: want a problem, its reason and the current image", out)
			}
		})
	}
}

func TestFrontendFromIngress(t *testing.T) {
	t.Parallel()
	rule := func(h string) networkingv1.IngressRule { return networkingv1.IngressRule{Host: h} }
	tests := []struct {
		name   string
		rules  []string
		tls    []string
		scheme string // gatehouse.dev/external-scheme
		want   []string
	}{
		{"exact TLS host", []string{"a.example.com", "b.example.com"}, []string{"a.example.com"}, "", []string{"https://a.example.com", "http://b.example.com"}},
		{"wildcard covers one label", []string{"a.example.com", "x.a.example.com", "example.com"}, []string{"*.example.com"}, "", []string{"https://a.example.com", "http://example.com", "http://x.a.example.com"}},
		{"case and duplicates", []string{"A.Example.com", "a.example.com", "*.example.com"}, []string{"A.EXAMPLE.COM"}, "", []string{"https://a.example.com"}},
		{"TLS outside spec.tls", []string{"a.example.com"}, nil, "https", []string{"https://a.example.com"}},
		{"plain http on purpose", []string{"a.example.com"}, []string{"a.example.com"}, "http", []string{"http://a.example.com"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{}}}
			if tc.scheme != "" {
				ing.Annotations[AnnExternalScheme] = tc.scheme
			}
			for _, h := range tc.rules {
				ing.Spec.Rules = append(ing.Spec.Rules, rule(h))
			}
			ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: tc.tls}}
			var got []string
			for _, h := range frontendFromIngress(ing).Hosts {
				got = append(got, h.origin())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("origins (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHashIgnoresImageAndResources: an upgrade (image) or new default
// resources keep the hash, so no Pod is evicted; what the sidecar
// enforces changes it.
func TestHashIgnoresImageAndResources(t *testing.T) {
	t.Parallel()
	base := testSpec(SecretMountPath)
	same := base
	same.Image = "ghcr.io/gatehouse-dev/gatehouse:v1.0.1"
	same.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("48Mi")}}
	same.Policy.AllowedGroups = []string{"live-reloaded"}
	if base.hash() != same.hash() {
		t.Error("image, resources or live policy changed the hash")
	}
	for name, edit := range map[string]func(*sidecarSpec){
		"issuer":        func(s *sidecarSpec) { s.IssuerURL = "https://other.example.com" },
		"session store": func(s *sidecarSpec) { s.RedisURL = "redis://redis:6379" },
		"hosts":         func(s *sidecarSpec) { s.Origins = append(s.Origins, "https://new.example.com") },
		"secret":        func(s *sidecarSpec) { s.Ingress = "other" },
		"access token":  func(s *sidecarSpec) { s.Policy.PassAccessToken = !s.Policy.PassAccessToken },
	} {
		changed := base
		changed.Origins = slices.Clone(base.Origins)
		edit(&changed)
		if changed.hash() == base.hash() {
			t.Errorf("%s: the hash did not change", name)
		}
	}
}

// TestCompare: a Pod injected with an older image is stale, not outdated;
// a Pod injected by an earlier release (another hash) whose command line
// enforces the same is not outdated either.
func TestCompare(t *testing.T) {
	t.Parallel()
	spec := testSpec(SecretMountPath)
	pod := appPod()
	inject(pod, spec, "http")
	if got := spec.compare(pod, "http"); got != sidecarCurrent {
		t.Fatalf("freshly injected: %d", got)
	}
	upgraded := spec
	upgraded.Image = "ghcr.io/gatehouse-dev/gatehouse:v1.1.0"
	if got := upgraded.compare(pod, "http"); got != sidecarStale {
		t.Errorf("after an upgrade: %d, want stale", got)
	}
	older := pod.DeepCopy()
	older.Annotations[PodAnnConfigHash] = "0123456789abcdef" // an earlier release's hash
	if got := spec.compare(older, "http"); got != sidecarCurrent {
		t.Errorf("same command line, older hash: %d, want current", got)
	}
	moved := spec
	moved.IssuerURL = "https://other.example.com"
	if got := moved.compare(older, "http"); got != sidecarOutdated {
		t.Errorf("another issuer: %d, want outdated", got)
	}
	if got := spec.compare(appPod(), "http"); got != sidecarMissing {
		t.Errorf("plain Pod: %d", got)
	}
	if got := spec.compare(pod, "grpc"); got != sidecarOutdated {
		t.Errorf("the Service now targets another port: %d, want outdated", got)
	}
}

// TestInjectionPatchKeepsUnknownFields: the webhook's patch, applied to
// the Pod as the API server sent it, keeps fields Gatehouse's compiled API
// types do not know, and yields the injected Pod.
func TestInjectionPatchKeepsUnknownFields(t *testing.T) {
	t.Parallel()
	pod := appPod()
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "shop:1"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Annotations = map[string]string{"team": "shop"}
	pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/stop", Port: intstrName("http")}}}
	typed, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(typed, &raw); err != nil {
		t.Fatal(err)
	}
	spec := raw["spec"].(map[string]any)
	spec["futureSpecField"] = map[string]any{"mode": "strict"}
	spec["containers"].([]any)[0].(map[string]any)["futureContainerField"] = true
	spec["initContainers"].([]any)[0].(map[string]any)["futureInitField"] = "x"
	spec["containers"].([]any)[0].(map[string]any)["ports"].([]any)[0].(map[string]any)["futurePortField"] = 1.0
	rawJSON, _ := json.Marshal(raw)

	mutated := pod.DeepCopy()
	if !inject(mutated, testSpec(SecretMountPath), "http") {
		t.Fatal("nothing injected")
	}
	ops, err := json.Marshal(injectionPatch(pod, mutated))
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatchapply.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	out, err := patch.Apply(rawJSON)
	if err != nil {
		t.Fatalf("apply %s: %v", ops, err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	gs := got["spec"].(map[string]any)
	app := gs["containers"].([]any)[0].(map[string]any)
	if gs["futureSpecField"] == nil || app["futureContainerField"] != true ||
		gs["initContainers"].([]any)[1].(map[string]any)["futureInitField"] != "x" ||
		app["ports"].([]any)[0].(map[string]any)["futurePortField"] != 1.0 {
		t.Errorf("unknown fields lost: %s", out)
	}
	// Apart from the unknown fields, the result is the injected Pod.
	var back corev1.Pod
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(mutated, &back); diff != "" {
		t.Errorf("patched Pod differs from the injected one (-want +got):\n%s", diff)
	}
}

func intstrName(s string) intstr.IntOrString { return intstr.FromString(s) }
