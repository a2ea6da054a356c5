// Package e2e_test runs the gatehouse binary against a real OpenID provider
// (the npm package oidc-provider, see e2e/idp) and a real upstream on
// 127.0.0.1, the way a platform team would run it.
package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/e2e/idp"
)

// binary is the gatehouse binary built once for the package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gatehouse-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "gatehouse")
	// Both builds, as in the image: the browser test's demo runs the
	// controller from gatehouse and the sidecar from gatehouse-sidecar.
	for _, args := range [][]string{
		{"build", "-o", binary, "../cmd/gatehouse"},
		{"build", "-tags", "sidecar", "-o", binary + "-sidecar", "../cmd/gatehouse"},
	} {
		build := exec.Command("go", args...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "go", strings.Join(args, " "), err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a free 127.0.0.1 address for a process that will listen
// on it.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// echoUpstream answers every request with a JSON echo of what it received.
func echoUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.RequestURI(), "header": r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// proc is a running gatehouse process.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []string
	done chan error
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// startGatehouse runs the binary with args and stops it (SIGTERM, by pid)
// when the test ends.
func startGatehouse(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs = append(p.logs, sc.Text())
			p.mu.Unlock()
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("gatehouse logs:\n%s", p.Logs())
		}
	})
	return p
}

// startProxy runs `gatehouse proxy` on addr in front of upstream with the
// real IdP as its provider (plain HTTP on loopback), plus extra flags, and
// waits until it has discovered the IdP.
func startProxy(t *testing.T, provider *idp.IdP, upstream, addr, metrics string, extra ...string) *proc {
	t.Helper()
	base := "http://" + addr
	args := append([]string{"proxy",
		"--listen-address=" + addr,
		"--metrics-address=" + metrics,
		"--upstream=" + upstream,
		"--issuer-url=" + provider.Issuer,
		"--client-id=" + provider.ClientID,
		"--client-secret-file=" + writeFile(t, "client-secret", provider.ClientSecret),
		"--redirect-url=" + base + "/_gatehouse/callback",
		"--cookie-secret-file=" + writeFile(t, "cookie-secret", strings.Repeat("e2e-cookie-secret-", 3)),
		"--cookie-secure=false",
		"--scopes=openid email profile groups",
	}, extra...)
	p := startGatehouse(t, args...)
	waitReady(t, metrics)
	return p
}

// waitReady polls /readyz until the IdP is discovered.
func waitReady(t *testing.T, metricsAddr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "identity provider: discovered") {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("gatehouse not ready with the IdP discovered within 20s")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
