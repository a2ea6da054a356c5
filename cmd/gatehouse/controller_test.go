//go:build !sidecar

package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestControllerFlagsErrors(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := func(string) (string, bool) { return "", false }
	err := run(t.Context(), []string{"controller", "--webhook-port=0"}, env, &stdout, &stderr)
	if exitCode(err) != 2 {
		t.Fatalf("exit code %d for bad flags, want 2 (err %v)", exitCode(err), err)
	}
	for _, want := range []string{"--config", "--sidecar-image", "--webhook-port", "--namespace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	stdout.Reset()
	if err := run(t.Context(), []string{"controller", "--help"}, env, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--config", "--sidecar-image", "--webhook-port", "--webhook-cert-dir", "--metrics-address", "--health-address", "--leader-elect", "--namespace", "--kubeconfig"} {
		if !strings.Contains(stdout.String(), flag+" ") {
			t.Errorf("controller --help lacks %s", flag)
		}
	}
}

func TestControllerWebhookURLErrors(t *testing.T) {
	t.Parallel()
	env := func(string) (string, bool) { return "", false }
	for _, tc := range []struct{ args []string }{
		{[]string{"--webhook-url=http://127.0.0.1:9443/mutate-v1-pod"}},
		{[]string{"--webhook-url=https://127.0.0.1:9443/mutate-v1-pod", "--webhook-cert-dir=/tmp/certs"}},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"controller", "--config=c.yaml", "--sidecar-image=i", "--namespace=n"}, tc.args...)
		err := run(t.Context(), args, env, &stdout, &stderr)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), "--webhook-url") {
			t.Errorf("%v: err %v (exit %d), want a usage error naming --webhook-url", tc.args, err, exitCode(err))
		}
	}
}

func TestStatusFlagsErrors(t *testing.T) {
	t.Parallel()
	env := func(string) (string, bool) { return "", false }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"two names", []string{"status", "a", "b"}, "at most one Ingress or HTTPRoute name"},
		{"all with a namespace", []string{"status", "-A", "-n", "shop"}, "--all-namespaces"},
		{"missing kubeconfig", []string{"status", "--kubeconfig", "/nonexistent/kubeconfig"}, "--kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(t.Context(), tc.args, env, &out, &out)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run(%q) = %v; want a usage error naming %s", tc.args, err, tc.want)
			}
		})
	}
}

func TestSoftMemoryLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		env    map[string]string
		want   int64
		wantOK bool
	}{
		{name: "90% of the container's limit", env: map[string]string{"GATEHOUSE_MEMORY_LIMIT": "402653184"}, want: 362387862, wantOK: true},
		{name: "GOMEMLIMIT wins", env: map[string]string{"GATEHOUSE_MEMORY_LIMIT": "402653184", "GOMEMLIMIT": "300MiB"}},
		{name: "no limit", env: map[string]string{}},
		{name: "not a number", env: map[string]string{"GATEHOUSE_MEMORY_LIMIT": "384Mi"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := softMemoryLimit(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("softMemoryLimit = %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
