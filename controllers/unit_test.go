package controllers

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ann     map[string]string
		want    Policy
		wantErr string // substring naming the key; empty means valid
	}{
		{name: "not annotated", ann: map[string]string{"other": "x"}, want: Policy{Rollout: RolloutAuto}},
		{name: "enabled alone", ann: map[string]string{AnnEnabled: "true"}, want: Policy{Enabled: true, Rollout: RolloutAuto}},
		{name: "everything", ann: map[string]string{
			AnnEnabled: "true", AnnProvider: "corp", AnnAllowedGroups: "team-a, team-b",
			AnnAllowedEmails: "a@example.com", AnnAllowedEmailDomains: "example.com",
			AnnSkipAuthPaths: "^/healthz$,^/static/", AnnSessionStore: "redis", AnnScopes: "openid email groups",
			AnnPassAccessToken: "true", AnnRollout: "manual",
		}, want: Policy{
			Enabled: true, Provider: "corp", AllowedGroups: []string{"team-a", "team-b"},
			AllowedEmails: []string{"a@example.com"}, AllowedEmailDomains: []string{"example.com"},
			SkipAuthPaths: []string{"^/healthz$", "^/static/"}, SessionStore: "redis",
			Scopes: []string{"openid", "email", "groups"}, PassAccessToken: true, Rollout: RolloutManual,
		}},
		{name: "patterns one a line keep commas", ann: map[string]string{AnnEnabled: "true", AnnSkipAuthPaths: "^/a{1,3}$\n^/b$\n"},
			want: Policy{Enabled: true, SkipAuthPaths: []string{"^/a{1,3}$", "^/b$"}, Rollout: RolloutAuto}},
		{name: "enabled not a bool", ann: map[string]string{AnnEnabled: "yes please"}, wantErr: AnnEnabled},
		{name: "bad email", ann: map[string]string{AnnEnabled: "true", AnnAllowedEmails: "nobody"}, wantErr: AnnAllowedEmails},
		{name: "bad domain", ann: map[string]string{AnnEnabled: "true", AnnAllowedEmailDomains: "@example.com"}, wantErr: AnnAllowedEmailDomains},
		{name: "bad regexp", ann: map[string]string{AnnEnabled: "true", AnnSkipAuthPaths: "(open"}, wantErr: AnnSkipAuthPaths},
		{name: "bad store", ann: map[string]string{AnnEnabled: "true", AnnSessionStore: "memcached"}, wantErr: AnnSessionStore},
		{name: "scopes without openid", ann: map[string]string{AnnEnabled: "true", AnnScopes: "email"}, wantErr: AnnScopes},
		{name: "bad rollout", ann: map[string]string{AnnEnabled: "true", AnnRollout: "sometimes"}, wantErr: AnnRollout},
		{name: "bad provider name", ann: map[string]string{AnnEnabled: "true", AnnProvider: "Corp IdP"}, wantErr: AnnProvider},
		{name: "typo in a key", ann: map[string]string{AnnEnabled: "true", "gatehouse.dev/allowed-group": "admins"}, wantErr: "allowed-group"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parsePolicy(tc.ann)
			if tc.wantErr != "" {
				if !errors.Is(err, errInvalidAnnotation) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add("enabled", "true")
	f.Add("allowed-emails", "a@b.c,d@e.f")
	f.Add("skip-auth-paths", "^/a{1,3}$\n(")
	f.Add("scopes", "openid,,email")
	f.Fuzz(func(t *testing.T, key, value string) {
		p, err := parsePolicy(map[string]string{AnnotationPrefix + key: value, AnnEnabled: "true"})
		if err != nil {
			if !errors.Is(err, errInvalidAnnotation) {
				t.Fatalf("error %v does not wrap errInvalidAnnotation", err)
			}
			return
		}
		for _, e := range p.AllowedEmails {
			if !strings.Contains(e, "@") {
				t.Fatalf("accepted email %q", e)
			}
		}
		if len(p.Scopes) > 0 && !containsString(p.Scopes, "openid") {
			t.Fatalf("accepted scopes without openid: %q", p.Scopes)
		}
	})
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	good := `
providers:
  - name: default
    issuerURL: https://login.example.com
    clientID: gatehouse
    clientSecretRef: {name: gatehouse-oidc, key: client-secret}
    scopes: [openid, email, profile]
    groupsClaim: groups
    allowedNamespaces: ["*"]
    sessionStore:
      redisURL: redis://redis.gatehouse:6379/0
      passwordSecretRef: {name: gatehouse-redis, key: password}
defaults:
  provider: default
  pathPrefix: /_gatehouse
  sidecar:
    resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
`
	fc, err := ParseFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := fc.Provider("default"); !ok || p.ClientSecretRef.Key != "client-secret" || !p.Allows("any") {
		t.Errorf("provider %+v", p)
	}
	if fc.Defaults.Sidecar.Resources.Limits.Memory().String() != "64Mi" {
		t.Errorf("resources %+v", fc.Defaults.Sidecar.Resources)
	}
	for name, bad := range map[string]string{
		"unknown key":       "providers: []\nextra: 1\n",
		"unknown nested":    "providers:\n  - name: a\n    issuerURL: https://x\n    clientID: c\n    clientSecret: oops\n",
		"http issuer":       "providers:\n  - name: a\n    issuerURL: http://idp.example\n    clientID: c\n",
		"duplicate":         "providers:\n  - {name: a, issuerURL: 'https://x', clientID: c}\n  - {name: a, issuerURL: 'https://y', clientID: c}\n",
		"missing client":    "providers:\n  - {name: a, issuerURL: 'https://x'}\n",
		"unknown default":   "providers: []\ndefaults: {provider: nope}\n",
		"not yaml":          "providers: [\n",
		"redis without url": "providers:\n  - {name: a, issuerURL: 'https://x', clientID: c, sessionStore: {}}\n",
		"logout redirect":   "providers:\n  - {name: a, issuerURL: 'https://x', clientID: c, logoutRedirect: global}\n",
	} {
		if _, err := ParseFile([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseFile([]byte("providers:\n  - {name: dev, issuerURL: 'http://127.0.0.1:5556', clientID: c}\n")); err != nil {
		t.Errorf("loopback http issuer refused: %v", err)
	}
}

// TestLogoutRedirect: a provider's logoutRedirect reaches its sidecars as
// --logout-redirect; without it the proxy's default (local) stays.
func TestLogoutRedirect(t *testing.T) {
	t.Parallel()
	spec := testSpec("/etc/gatehouse")
	if args := spec.proxyConfig(8080, SidecarPort, SidecarMetricsPort).Args(); slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--logout-redirect") }) {
		t.Errorf("default sidecar args set --logout-redirect: %q", args)
	}
	spec.LogoutRedirect = "idp"
	if args := spec.proxyConfig(8080, SidecarPort, SidecarMetricsPort).Args(); !slices.Contains(args, "--logout-redirect=idp") {
		t.Errorf("sidecar args %q lack --logout-redirect=idp", args)
	}
	if err := spec.validate(); err != nil {
		t.Errorf("logout-redirect idp does not validate: %v", err)
	}
}

func testSpec(mount string) sidecarSpec {
	return sidecarSpec{
		Ingress: "shop",
		Policy: Policy{Enabled: true, AllowedGroups: []string{"team-a"}, AllowedEmailDomains: []string{"example.com"},
			SkipAuthPaths: []string{"^/healthz$"}, PassAccessToken: true, Rollout: RolloutAuto},
		IssuerURL: "https://login.example.com", ClientID: "gatehouse", HasClientSecret: true,
		Scopes: []string{"openid", "email", "profile"}, GroupsClaim: "groups",
		Origins: []string{"https://shop.example.com", "https://www.shop.example.com"}, PathPrefix: "/_gatehouse",
		Image: "ghcr.io/gatehouse-dev/gatehouse:v1.0.0",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		MountPath: mount,
	}
}

func appPod() *corev1.Pod {
	return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Image: "shop:1",
		Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}},
		LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}},
		StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/start", Port: intstr.FromString("grpc")}}},
	}}}}
}

// TestInjectGolden: the patched Pod, byte for byte.
func TestInjectGolden(t *testing.T) {
	t.Parallel()
	pod := appPod()
	if !inject(pod, testSpec(SecretMountPath), "http") {
		t.Fatal("nothing injected")
	}
	got, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/injected-pod.golden", got)

	app := pod.Spec.Containers[0]
	if app.Ports[0].Name != "" || app.Ports[1].Name != "grpc" {
		t.Errorf("app ports %+v: the taken-over name must go, the other stay", app.Ports)
	}
	if app.ReadinessProbe.HTTPGet.Port != intstr.FromInt32(8080) || app.LivenessProbe.TCPSocket.Port != intstr.FromInt32(8080) {
		t.Errorf("probes on the taken-over name not rewritten to the app's port: %+v %+v", app.ReadinessProbe, app.LivenessProbe)
	}
	if app.StartupProbe.HTTPGet.Port != intstr.FromString("grpc") {
		t.Errorf("an unrelated probe was rewritten")
	}
	sc := pod.Spec.InitContainers[0]
	if sc.Ports[0].Name != "http" || sc.Ports[0].ContainerPort != 4180 || sc.Ports[1].ContainerPort != 9091 {
		t.Errorf("sidecar ports %+v (9090 is the app's, so metrics move to 9091)", sc.Ports)
	}
	if inject(pod, testSpec(SecretMountPath), "http") {
		t.Error("second injection changed the Pod")
	}
	if inject(appPod(), testSpec(SecretMountPath), "web") {
		t.Error("injected without a port of that name")
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./controllers -run %s -update)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got); if intended, run go test ./controllers -run %s -update:\n%s", path, t.Name(), diff)
	}
}

// TestSidecarContract proves the roles agree: the arguments the controller
// renders, with the files it mounts, parse with the proxy's own flags and
// pass its Validate, and the policy file reaches the proxy's policy.
func TestSidecarContract(t *testing.T) {
	t.Parallel()
	variants := map[string]func(*sidecarSpec){
		"as is":         func(*sidecarSpec) {},
		"public client": func(s *sidecarSpec) { s.HasClientSecret = false },
		"redis":         func(s *sidecarSpec) { s.RedisURL = "redis://redis.gatehouse:6379/0"; s.HasRedisPassword = true },
		"namespace redis user": func(s *sidecarSpec) {
			s.RedisURL, s.RedisKeyPrefix, s.HasRedisPassword = "redis://gatehouse-shop@redis.gatehouse:6379/0", "gatehouse:shop:", true
		},
		"one host http": func(s *sidecarSpec) { s.Origins = []string{"http://dev.example.com"} },
		"no policy":     func(s *sidecarSpec) { s.Policy = Policy{Enabled: true} },
	}
	for name, edit := range variants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			spec := testSpec(dir)
			edit(&spec)
			files := map[string][]byte{
				SecretKeyCookie:       newCookieSecret(),
				SecretKeyClientSecret: []byte("s3cret"),
				SecretKeyPolicy:       policyFile(spec.Policy),
			}
			for k, v := range files {
				if err := os.WriteFile(filepath.Join(dir, k), v, 0o400); err != nil {
					t.Fatal(err)
				}
			}
			if err := spec.validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			pod := appPod()
			inject(pod, spec, "http")
			c := pod.Spec.InitContainers[0]
			if c.Args[0] != "proxy" {
				t.Fatalf("args %q", c.Args)
			}
			env := func(k string) (string, bool) {
				if k == "GATEHOUSE_REDIS_PASSWORD" && spec.HasRedisPassword {
					return "pw", true
				}
				return "", false
			}
			cfg, err := proxy.Load(c.Args[1:], env, io.Discard)
			if err != nil {
				t.Fatalf("the proxy refuses the controller's arguments %q: %v", c.Args, err)
			}
			if spec.RedisKeyPrefix != "" && cfg.RedisKeyPrefix != spec.RedisKeyPrefix {
				t.Errorf("--redis-key-prefix %q, want %q", cfg.RedisKeyPrefix, spec.RedisKeyPrefix)
			}
			if cfg.Upstream != "http://127.0.0.1:8080" || len(cfg.RedirectURLs) != len(spec.Origins) {
				t.Errorf("config %+v", cfg)
			}
			got := cfg.PolicySpec()
			if !cmp.Equal(got.AllowedGroups, spec.Policy.AllowedGroups, emptyEqual) ||
				!cmp.Equal(got.SkipAuthPaths, spec.Policy.SkipAuthPaths, emptyEqual) ||
				!cmp.Equal(got.AllowedEmailDomains, spec.Policy.AllowedEmailDomains, emptyEqual) {
				t.Errorf("policy from the mounted file %+v, want %+v", got, spec.Policy)
			}
			if _, err := proxy.New(cfg, proxy.Deps{}); err != nil {
				t.Errorf("proxy.New with the mounted files: %v", err)
			}
		})
	}
}

var emptyEqual = cmp.Comparer(func(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return cmp.Equal([]string(a), []string(b))
})
