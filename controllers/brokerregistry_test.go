package controllers

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
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
