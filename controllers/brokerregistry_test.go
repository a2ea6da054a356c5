package controllers

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// brokeredSpec is testSpec for a provider in broker mode, as resolve makes
// it.
func brokeredSpec(mount string) sidecarSpec {
	s := testSpec(mount)
	s.HasClientSecret = false
	s.Provider = "corp"
	s.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/corp"
	s.BrokerAudience = DefaultBrokerAudience
	return s
}

func TestBrokerRedirects(t *testing.T) {
	t.Parallel()
	r := BrokerRedirects{"corp": {"https://b.example.com/_gatehouse/callback", "https://a.example.com/_gatehouse/callback", "https://a.example.com/_gatehouse/callback"}}
	got := r.String()
	if want := `{"corp":["https://a.example.com/_gatehouse/callback","https://b.example.com/_gatehouse/callback"]}`; got != want {
		t.Errorf("String() = %s, want %s (sorted, once each)", got, want)
	}
	back, err := ParseBrokerRedirects(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		provider, uri string
		want          bool
	}{
		{"corp", "https://a.example.com/_gatehouse/callback", true},
		{"corp", "https://A.example.com/_gatehouse/callback", true},
		{"corp", "http://a.example.com:4180/_gatehouse/callback", true},
		{"other", "https://a.example.com/_gatehouse/callback", false},
		{"corp", "https://evil.example.com/_gatehouse/callback", false},
		{"corp", "https://a.example.com.evil.example/_gatehouse/callback", false},
		{"corp", "https://evil.example@a.example.com/_gatehouse/callback", false},
		{"corp", "https://a.example.com@evil.example/_gatehouse/callback", false},
		{"corp", "https://a.example.com/_gatehouse/callback#x", false},
		{"corp", "javascript://a.example.com/x", false},
		{"corp", "/_gatehouse/callback", false},
		{"corp", "", false},
	} {
		if got := back.Allows(tc.provider, tc.uri); got != tc.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tc.provider, tc.uri, got, tc.want)
		}
	}
	if _, err := ParseBrokerRedirects("not json"); err == nil {
		t.Error("a broken entry parsed")
	}
}

func TestClientSecretMode(t *testing.T) {
	t.Parallel()
	const base = "providers:\n  - {name: corp, issuerURL: 'https://login.example.com', clientID: c"
	for _, tc := range []struct {
		name, file, want string
	}{
		{"broker", base + ", clientSecretRef: {name: s, key: k}, clientSecretMode: broker}\n", ""},
		{"copy", base + ", clientSecretRef: {name: s, key: k}, clientSecretMode: copy}\n", ""},
		{"public client in broker mode", base + ", clientSecretMode: broker}\n", "providers[0].clientSecretMode: broker needs clientSecretRef"},
		{"unknown mode", base + ", clientSecretRef: {name: s, key: k}, clientSecretMode: vault}\n", `providers[0].clientSecretMode: "vault" is not copy or broker`},
	} {
		_, err := ParseFile([]byte(tc.file))
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	file, err := ParseFile([]byte(base + ", clientSecretRef: {name: s, key: k}, clientSecretMode: broker}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := file.CheckBroker(""); err == nil || !strings.Contains(err.Error(), `--broker-url: required: provider "corp"`) {
		t.Errorf("a brokered provider without --broker-url: %v", err)
	}
	if err := file.CheckBroker("https://gatehouse-broker.gatehouse.svc"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"http://gatehouse-broker.gatehouse.svc", "https://gatehouse-broker.gatehouse.svc/v1", "gatehouse-broker"} {
		c := DefaultConfig()
		c.ConfigFile, c.SidecarImage, c.Namespace, c.BrokerURL = "f", "i", "gatehouse", bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--broker-url") {
			t.Errorf("--broker-url=%s: %v", bad, err)
		}
	}
}

// TestInjectBrokered: a brokered sidecar holds no client secret, trusts the
// broker's CA from its Secret and mounts a projected token of the broker's
// audience, bound to the Pod and short-lived. Its hash differs from the
// copy mode's, so a change of mode rolls the Pods.
func TestInjectBrokered(t *testing.T) {
	t.Parallel()
	spec := brokeredSpec(SecretMountPath)
	pod := appPod()
	if !inject(pod, spec, "http") {
		t.Fatal("nothing injected")
	}
	got, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/injected-pod-broker.golden", got)
	sc := pod.Spec.InitContainers[0]
	if slices.ContainsFunc(sc.Args, func(a string) bool { return strings.HasPrefix(a, "--client-secret-file") }) ||
		!slices.Contains(sc.Args, "--broker-url="+spec.BrokerURL) || !slices.Contains(sc.Args, "--broker-ca-file=/etc/gatehouse/broker-ca.crt") {
		t.Errorf("sidecar args %q", sc.Args)
	}
	if pod.Spec.ServiceAccountName != "default" {
		t.Errorf("serviceAccountName %q: a projected token needs one", pod.Spec.ServiceAccountName)
	}
	if testSpec(SecretMountPath).hash() == spec.hash() {
		t.Error("copy and broker mode hash alike")
	}
	other := spec
	other.BrokerAudience = "elsewhere"
	if other.hash() == spec.hash() {
		t.Error("the token's audience is not in the hash")
	}
}

// TestInjectionPatchBrokered: the patch adds both volumes, and names the
// ServiceAccount only when the Pod has none.
func TestInjectionPatchBrokered(t *testing.T) {
	t.Parallel()
	for _, sa := range []string{"", "shop"} {
		pod := appPod()
		pod.Spec.ServiceAccountName = sa
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		raw, _ := json.Marshal(pod)
		mutated := pod.DeepCopy()
		inject(mutated, brokeredSpec(SecretMountPath), "http")
		ops, _ := json.Marshal(injectionPatch(pod, mutated))
		patch, err := jsonpatchapply.DecodePatch(ops)
		if err != nil {
			t.Fatal(err)
		}
		out, err := patch.Apply(raw)
		if err != nil {
			t.Fatalf("apply %s: %v", ops, err)
		}
		var back corev1.Pod
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(mutated, &back); diff != "" {
			t.Errorf("serviceAccountName %q: patched Pod differs from the injected one (-want +got):\n%s", sa, diff)
		}
		if len(back.Spec.Volumes) != 3 || (sa != "" && back.Spec.ServiceAccountName != sa) {
			t.Errorf("volumes %v, serviceAccountName %q", back.Spec.Volumes, back.Spec.ServiceAccountName)
		}
	}
}

// TestSidecarContractBrokered: the brokered sidecar's arguments, with the
// files its Secret holds (no client secret), start the proxy.
func TestSidecarContractBrokered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	spec := brokeredSpec(dir)
	ca, _, err := newCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string][]byte{
		SecretKeyCookie:   newCookieSecret(),
		SecretKeyPolicy:   policyFile(spec.Policy),
		SecretKeyBrokerCA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
	} {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	pod := appPod()
	inject(pod, spec, "http")
	c := pod.Spec.InitContainers[0]
	cfg, err := proxy.Load(c.Args[1:], func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatalf("the proxy refuses the controller's arguments %q: %v", c.Args, err)
	}
	if cfg.BrokerURL != spec.BrokerURL || cfg.BrokerTokenFile != BrokerTokenMountPath+"/token" || cfg.ClientSecretFile != "" {
		t.Errorf("config %+v", cfg)
	}
	if _, err := proxy.New(cfg, proxy.Deps{}); err != nil {
		t.Errorf("proxy.New with the mounted files: %v", err)
	}
}

// TestBrokerCertNames: the broker's certificate covers its Service's names,
// or the IP address of a broker reached on loopback.
func TestBrokerCertNames(t *testing.T) {
	t.Parallel()
	names, ips := (&brokerCerts{host: "gatehouse-broker.gatehouse.svc"}).names()
	if want := []string{"gatehouse-broker", "gatehouse-broker.gatehouse", "gatehouse-broker.gatehouse.svc", "gatehouse-broker.gatehouse.svc.cluster.local"}; !slices.Equal(names, want) || ips != nil {
		t.Errorf("names %v %v, want %v", names, ips, want)
	}
	names, ips = (&brokerCerts{host: "127.0.0.1"}).names()
	if names != nil || len(ips) != 1 || ips[0].String() != "127.0.0.1" {
		t.Errorf("loopback: %v %v", names, ips)
	}
	names, _ = (&brokerCerts{host: "broker.example.com"}).names()
	if !slices.Equal(names, []string{"broker.example.com"}) {
		t.Errorf("a plain host: %v", names)
	}
	// A certificate from another CA is renewed.
	now := time.Now()
	ca, key, _ := newCA(now)
	other, _, _ := newCA(now)
	b := &brokerCerts{host: "gatehouse-broker.gatehouse.svc", now: func() time.Time { return now }}
	n, i := b.names()
	data, err := issueServing(ca, key, n, i, now)
	if err != nil {
		t.Fatal(err)
	}
	if b.needsRenewal(data, ca) {
		t.Error("a fresh certificate needs renewal")
	}
	if !b.needsRenewal(data, other) {
		t.Error("a certificate of another CA does not need renewal")
	}
	b.host = "elsewhere.gatehouse.svc"
	if !b.needsRenewal(data, ca) {
		t.Error("a certificate for another host does not need renewal")
	}
}

// FuzzBrokerRedirectsAllows: whatever redirect_uri a sidecar sends, the
// broker allows it only when, read as text, it starts with the scheme and
// a registered host and nothing else is before the port, path or query
// (no user information, no longer host name).
func FuzzBrokerRedirectsAllows(f *testing.F) {
	for _, s := range []string{
		"https://a.example.com/_gatehouse/callback", "http://a.example.com:8080/cb", "https://a.example.com.evil/x",
		"https://evil@a.example.com/", "https://a.example.com@evil/", "https://A.EXAMPLE.COM/", "https://a.example.com\\@evil/",
		"https://[::1]/", "https://a.example.com%2f@evil/", "https:/a.example.com/", "//a.example.com/",
	} {
		f.Add(s)
	}
	r := BrokerRedirects{"corp": {"https://a.example.com/_gatehouse/callback"}}
	f.Fuzz(func(t *testing.T, uri string) {
		if !r.Allows("corp", uri) {
			return
		}
		lower := strings.ToLower(uri)
		for _, prefix := range []string{"https://a.example.com", "http://a.example.com"} {
			if rest, ok := strings.CutPrefix(lower, prefix); ok && (rest == "" || strings.ContainsAny(rest[:1], ":/?")) {
				return
			}
		}
		t.Fatalf("Allows(%q) = true, but it does not start with a registered host", uri)
	})
}

// TestRegistryData: a host belongs to the namespace that claimed it
// first; one namespace with too many callback URLs, or a registry too
// large for its ConfigMap, loses its own entry and nobody else's.
func TestRegistryData(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cb := func(host string) string { return "https://" + host + "/_gatehouse/callback" }
	got := registryData([]claim{
		{namespace: "thief", provider: "corp", urls: []string{cb("SHOP.example.com"), cb("thief.example.com")}, created: t0.Add(time.Hour)},
		{namespace: "shop", provider: "corp", urls: []string{cb("shop.example.com")}, created: t0},
		{namespace: "tie-b", provider: "corp", urls: []string{cb("tie.example.com")}, created: t0},
		{namespace: "tie-a", provider: "corp", urls: []string{cb("tie.example.com")}, created: t0},
	}, logr.Discard())
	want := map[string]string{
		"shop":  BrokerRedirects{"corp": {cb("shop.example.com")}}.String(),
		"thief": BrokerRedirects{"corp": {cb("thief.example.com")}}.String(),
		"tie-a": BrokerRedirects{"corp": {cb("tie.example.com")}}.String(),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("registry (-want +got):\n%s", diff)
	}

	var many []string
	for i := range maxRegistryURLs + 1 {
		many = append(many, cb(fmt.Sprintf("h%d.example.com", i)))
	}
	got = registryData([]claim{
		{namespace: "greedy", provider: "corp", urls: many, created: t0},
		{namespace: "shop", provider: "corp", urls: []string{cb("shop.example.com")}, created: t0},
	}, logr.Discard())
	if _, ok := got["greedy"]; ok || got["shop"] == "" {
		t.Errorf("a namespace over the limit: %v", maps.Keys(got))
	}

	// Namespaces within the per-namespace limit that together overflow
	// the ConfigMap: the largest go, the small one stays.
	var claims []claim
	long := strings.Repeat("x", 200)
	for n := range 12 {
		var urls []string
		for i := range maxRegistryURLs {
			urls = append(urls, cb(fmt.Sprintf("%s-%d-%d.example.com", long, n, i)))
		}
		claims = append(claims, claim{namespace: fmt.Sprintf("big-%02d", n), provider: "corp", urls: urls, created: t0})
	}
	claims = append(claims, claim{namespace: "shop", provider: "corp", urls: []string{cb("shop.example.com")}, created: t0})
	got = registryData(claims, logr.Discard())
	size := 0
	for ns, v := range got {
		size += len(ns) + len(v)
	}
	if size > maxRegistryBytes || got["shop"] == "" || len(got) < 2 {
		t.Errorf("registry of %d bytes with %d namespaces (shop: %q)", size, len(got), got["shop"])
	}
}

// TestRegistryMAC: the MAC covers the namespace, the provider and every
// URL, in any order, under the controller's key only.
func TestRegistryMAC(t *testing.T) {
	t.Parallel()
	key := []byte(strings.Repeat("k", 32))
	base := registryMAC(key, "shop", "corp", []string{"https://a/cb", "https://b/cb"})
	if registryMAC(key, "shop", "corp", []string{"https://b/cb", "https://a/cb"}) != base {
		t.Error("the MAC depends on the URLs' order")
	}
	for name, other := range map[string]string{
		"namespace":      registryMAC(key, "thief", "corp", []string{"https://a/cb", "https://b/cb"}),
		"provider":       registryMAC(key, "shop", "other", []string{"https://a/cb", "https://b/cb"}),
		"an added URL":   registryMAC(key, "shop", "corp", []string{"https://a/cb", "https://b/cb", "https://c/cb"}),
		"another key":    registryMAC([]byte(strings.Repeat("j", 32)), "shop", "corp", []string{"https://a/cb", "https://b/cb"}),
		"moved boundary": registryMAC(key, "shop\x00corp", "", []string{"https://a/cb", "https://b/cb"}),
	} {
		if other == base {
			t.Errorf("%s does not change the MAC", name)
		}
	}
}

// TestRegistryInputChanged: the registry is rebuilt for what it reads, not
// for the status annotations the controller patches on every rollout step.
func TestRegistryInputChanged(t *testing.T) {
	t.Parallel()
	base := &corev1.Secret{}
	base.Name, base.Labels = "gatehouse-shop", map[string]string{SecretLabelIngress: "shop"}
	base.Annotations = map[string]string{SecretAnnRegistryMAC: "m1", SecretAnnState: "rolling-out"}
	base.Data = map[string][]byte{SecretKeyLastGood: []byte(`{"a":1}`)}
	for _, tc := range []struct {
		name string
		edit func(*corev1.Secret)
		want bool
	}{
		{"status annotation", func(s *corev1.Secret) { s.Annotations[SecretAnnState] = "protected" }, false},
		{"cookie secret", func(s *corev1.Secret) { s.Data[SecretKeyCookie] = []byte("x") }, false},
		{"last good spec", func(s *corev1.Secret) { s.Data[SecretKeyLastGood] = []byte(`{"a":2}`) }, true},
		{"registry MAC", func(s *corev1.Secret) { s.Annotations[SecretAnnRegistryMAC] = "m2" }, true},
		{"label", func(s *corev1.Secret) { s.Labels[SecretLabelIngress] = "other" }, true},
	} {
		n := base.DeepCopy()
		tc.edit(n)
		if got := registryInputChanged.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: n}); got != tc.want {
			t.Errorf("%s: rebuild %v, want %v", tc.name, got, tc.want)
		}
	}
	plain := &corev1.Secret{}
	if registryInputChanged.Create(event.CreateEvent{Object: plain}) || !registryInputChanged.Create(event.CreateEvent{Object: base}) {
		t.Error("creations: only Gatehouse's Secrets rebuild the registry")
	}
}
