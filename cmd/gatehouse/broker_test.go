//go:build !sidecar

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBrokerFlagsErrors(t *testing.T) {
	t.Parallel()
	required := map[string]string{
		"GATEHOUSE_CONFIG":       "providers.yaml",
		"GATEHOUSE_TLS_CERT_DIR": "/tls",
		"POD_NAMESPACE":          "gatehouse-system",
	}
	with := func(extra map[string]string) map[string]string {
		env := map[string]string{}
		for k, v := range required {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		lines []string // the exact stderr lines
	}{
		{
			name: "nothing set",
			args: []string{"broker"},
			lines: []string{
				"gatehouse: --config: required: the providers file the controller reads",
				"gatehouse: --namespace: required when $POD_NAMESPACE is not set",
				"gatehouse: --tls-cert-dir: required: the directory with tls.crt and tls.key",
			},
		},
		{
			name:  "bad values",
			args:  []string{"broker", "--listen-address=8443", "--log-level=loud"},
			env:   required,
			lines: []string{`gatehouse: --listen-address: "8443" is not host:port`, `gatehouse: --log-level: "loud" is not debug, info, warn or error`},
		},
		{
			name:  "unknown flag",
			args:  []string{"broker", "--bogus"},
			env:   required,
			lines: []string{"gatehouse: flag provided but not defined: --bogus (gatehouse broker --help lists the flags)"},
		},
		{
			name:  "unparsable flag",
			args:  []string{"broker", "--shutdown-timeout=soon"},
			env:   required,
			lines: []string{`gatehouse: invalid value "soon" for flag --shutdown-timeout: parse error (gatehouse broker --help lists the flags)`},
		},
		{
			name:  "bad environment",
			args:  []string{"broker"},
			env:   with(map[string]string{"GATEHOUSE_KUBE_API_BURST": "many"}),
			lines: []string{`gatehouse: GATEHOUSE_KUBE_API_BURST: invalid value "many": parse error`},
		},
		{
			name:  "flag wins over environment",
			args:  []string{"broker", "--namespace=Not_A_Namespace"},
			env:   required,
			lines: []string{`gatehouse: --namespace: "Not_A_Namespace" is not a namespace name`},
		},
		{
			name:  "stray argument",
			args:  []string{"broker", "extra"},
			env:   required,
			lines: []string{`gatehouse: unexpected argument "extra" (flags start with --)`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCommand(t, tc.args, tc.env)
			if got := exitCode(r.err); got != 2 {
				t.Errorf("exit code %d (error %v), want 2", got, r.err)
			}
			got := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if diff := cmp.Diff(tc.lines, got); diff != "" {
				t.Errorf("stderr, one line per problem (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBrokerConfigFileError: a providers file that cannot be read is a
// configuration error (exit 2) naming --config, found before any
// connection to the cluster.
func TestBrokerConfigFileError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCommand(t, []string{"broker", "--config=" + filepath.Join(dir, "missing.yaml"), "--tls-cert-dir=" + dir, "--namespace=gatehouse-system", "--kubeconfig=" + kubeconfig}, nil)
	if exitCode(r.err) != 2 || !strings.HasPrefix(r.stderr, "gatehouse: --config: ") {
		t.Errorf("exit %d, stderr %q; want 2 and a line naming --config", exitCode(r.err), r.stderr)
	}
}

func TestBrokerHelp(t *testing.T) {
	t.Parallel()
	r := runCommand(t, []string{"broker", "--help"}, nil)
	if r.err != nil || r.stderr != "" {
		t.Fatalf("gatehouse broker --help: error %v, stderr %q; want neither", r.err, r.stderr)
	}
	golden := filepath.Join("testdata", "broker-help.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with: go test ./cmd/gatehouse -run TestBrokerHelp -update)", err)
	}
	if diff := cmp.Diff(string(want), r.stdout); diff != "" {
		t.Errorf("gatehouse broker --help differs from %s (-want +got); if the change is intended, run go test ./cmd/gatehouse -run TestBrokerHelp -update:\n%s", golden, diff)
	}
	for _, flag := range []string{"--config", "--namespace", "--listen-address", "--tls-cert-dir", "--registry", "--token-audience", "--metrics-address", "--health-address", "--kubeconfig", "--log-level", "--shutdown-timeout", "--kube-api-qps", "--kube-api-burst", "--token-review-qps", "--token-review-burst"} {
		if !strings.Contains(r.stdout, "\n  "+flag+" ") {
			t.Errorf("gatehouse broker --help lacks %s", flag)
		}
	}
}
