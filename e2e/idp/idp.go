// Package idp runs a real OpenID provider for Gatehouse's end-to-end tests.
//
// The provider is hack/idp/server.mjs, built on the npm package oidc-provider.
// Start launches it with node on 127.0.0.1 for the duration of a test; Login
// and Logout drive its HTML pages the way a browser would, so that tests can
// go through the whole sign-in flow of the proxy.
//
// Its dependencies are installed with `npm ci --prefix hack/idp` (make test
// does it); Start fails the test when they are missing.
package idp

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeouts for starting and stopping the IdP process.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 5 * time.Second
)

// Built-in users of the IdP (see hack/idp/server.mjs), used when
// Options.Users is nil.
const (
	DemoUser      = "demo"
	DemoPassword  = "demo"
	DemoEmail     = "demo@example.com"
	AliceUser     = "alice"
	AlicePassword = "alice"
	AliceEmail    = "alice@corp.example"
)

// User is an account of the IdP. Empty fields take the defaults of
// server.mjs: Sub, Name and PreferredUsername default to Login, EmailVerified
// to true.
type User struct {
	Login             string   `json:"login"`
	Password          string   `json:"password"`
	Sub               string   `json:"sub,omitempty"`
	Email             string   `json:"email,omitempty"`
	EmailVerified     *bool    `json:"email_verified,omitempty"`
	Name              string   `json:"name,omitempty"`
	PreferredUsername string   `json:"preferred_username,omitempty"`
	Groups            []string `json:"groups,omitempty"`
}

// Options configure the IdP; they mirror the IDP_* environment variables of
// hack/idp/server.mjs. Zero values mean the defaults.
type Options struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// ClientID defaults to "gatehouse".
	ClientID string
	// ClientSecret defaults to a random string.
	ClientSecret string
	// RedirectURIs registered for the client; at least one is required.
	RedirectURIs []string
	// PostLogoutRedirectURIs registered for the client.
	PostLogoutRedirectURIs []string
	// BackchannelLogoutURI, when set, is registered with
	// backchannel_logout_session_required: true.
	BackchannelLogoutURI string
	// Token lifetimes, rounded down to whole seconds (at least one second).
	// Defaults: access and ID tokens one hour, refresh tokens 14 days.
	AccessTokenTTL  time.Duration
	IDTokenTTL      time.Duration
	RefreshTokenTTL time.Duration
	// Users replaces the built-in demo users when not nil.
	Users []User
	// ClientJWKS, when set, is the JSON key set of the client's public
	// keys: the client then authenticates with private_key_jwt (RFC 7523)
	// only, and has no client secret.
	ClientJWKS string
}

// IdP is a running OpenID provider.
type IdP struct {
	// Issuer is the issuer URL, e.g. "http://127.0.0.1:43123".
	Issuer       string
	ClientID     string
	ClientSecret string

	mu       sync.Mutex
	lines    []string
	stop     func() error
	stopOnce sync.Once
}

// Start runs hack/idp/server.mjs with opts and waits until it listens. The
// process is stopped when the test ends; its stderr is copied to the test log
// and kept for LogLines.
func Start(t testing.TB, opts Options) *IdP {
	t.Helper()
	p, err := Launch(opts, t.Logf)
	if err != nil {
		t.Fatalf("idp.Start: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Logf("idp: %v", err)
		}
	})
	return p
}

// Launch runs hack/idp/server.mjs with opts and waits until it listens;
// Stop ends it. Its output lines go to logf, and its stderr is kept for
// LogLines. The process also exits when the caller dies, as its stdin
// closes.
func Launch(opts Options, logf func(format string, args ...any)) (*IdP, error) {
	if len(opts.RedirectURIs) == 0 {
		return nil, errors.New("Options.RedirectURIs is empty")
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "hack", "idp")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider")); err != nil {
		return nil, fmt.Errorf("%s/node_modules is missing: run `npm ci --prefix hack/idp` (make test does it)", dir)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("node is not installed (Node 20 or later is needed): %w", err)
	}

	p := &IdP{ClientID: opts.ClientID, ClientSecret: opts.ClientSecret}
	if p.ClientID == "" {
		p.ClientID = "gatehouse"
	}
	if p.ClientSecret == "" {
		p.ClientSecret = randomString()
	}
	env, err := environment(opts, p.ClientID, p.ClientSecret)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(node, filepath.Join(dir, "server.mjs"))
	cmd.Dir = dir
	cmd.Env = env
	// The IdP exits when stdin closes, i.e. also when the caller dies
	// without stopping it.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting node: %w", err)
	}

	// Both readers end when the process exits; Stop waits for them so
	// that nothing is logged after it returns.
	var readers sync.WaitGroup
	ready := make(chan string, 1)
	readers.Add(2)
	go func() {
		defer readers.Done()
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			line := s.Text()
			if issuer, ok := strings.CutPrefix(line, "READY "); ok {
				select {
				case ready <- strings.TrimSpace(issuer):
				default:
				}
				continue
			}
			logf("idp stdout: %s", line)
		}
	}()
	go func() {
		defer readers.Done()
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			line := s.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			logf("idp: %s", line)
		}
	}()
	exited := make(chan struct{})
	go func() {
		readers.Wait()
		close(exited)
	}()
	p.stop = func() error {
		// Stop by pid: SIGTERM first, SIGKILL if it does not exit in time.
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			logf("idp: SIGTERM to pid %d: %v", cmd.Process.Pid, err)
		}
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			logf("idp: pid %d did not exit after SIGTERM, killing it", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil && !isSignalExit(err) {
			return fmt.Errorf("process exit: %w", err)
		}
		return nil
	}

	select {
	case issuer := <-ready:
		p.Issuer = issuer
		return p, nil
	case <-exited:
		_ = p.Stop()
		return nil, errors.New("the IdP exited before it was ready (its output is in the log above)")
	case <-time.After(readyTimeout):
		_ = p.Stop()
		return nil, fmt.Errorf("the IdP did not print READY within %v", readyTimeout)
	}
}

// Stop ends the IdP process and waits for it; later calls do nothing.
func (p *IdP) Stop() error {
	var err error
	p.stopOnce.Do(func() { err = p.stop() })
	return err
}

// isSignalExit reports an exit caused by the signal Stop sent.
func isSignalExit(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// LogLines returns the lines the IdP wrote to stderr so far, e.g.
// "token grant_type=refresh_token status=200". The formats are listed at the
// top of hack/idp/server.mjs. Lines arrive asynchronously: poll for the ones
// caused by a request that just returned.
func (p *IdP) LogLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Revocations returns how many successful revocation calls the IdP served,
// per kind of token revoked: "AccessToken", "RefreshToken" and "none" (an
// unknown or already revoked token).
func (p *IdP) Revocations() (map[string]int, error) {
	resp, err := http.Get(p.Issuer + "/_test/revocations")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /_test/revocations: %s", resp.Status)
	}
	var counts map[string]int
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&counts); err != nil {
		return nil, fmt.Errorf("GET /_test/revocations: %w", err)
	}
	return counts, nil
}

// environment returns the process environment for the IdP: the test's own,
// without any IDP_* variable, plus the ones derived from opts.
func environment(opts Options, clientID, clientSecret string) ([]string, error) {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IDP_") {
			env = append(env, kv)
		}
	}
	set := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	seconds := func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return strconv.FormatInt(max(int64(d/time.Second), 1), 10)
	}
	set("IDP_PORT", strconv.Itoa(opts.Port))
	set("IDP_CLIENT_ID", clientID)
	set("IDP_CLIENT_SECRET", clientSecret)
	set("IDP_REDIRECT_URIS", strings.Join(opts.RedirectURIs, ","))
	set("IDP_POST_LOGOUT_REDIRECT_URIS", strings.Join(opts.PostLogoutRedirectURIs, ","))
	set("IDP_BACKCHANNEL_LOGOUT_URI", opts.BackchannelLogoutURI)
	set("IDP_ACCESS_TOKEN_TTL", seconds(opts.AccessTokenTTL))
	set("IDP_ID_TOKEN_TTL", seconds(opts.IDTokenTTL))
	set("IDP_REFRESH_TOKEN_TTL", seconds(opts.RefreshTokenTTL))
	set("IDP_EXIT_ON_STDIN_CLOSE", "1")
	set("IDP_CLIENT_JWKS", opts.ClientJWKS)
	if opts.Users != nil {
		users, err := json.Marshal(opts.Users)
		if err != nil {
			return nil, fmt.Errorf("encoding Options.Users: %w", err)
		}
		set("IDP_USERS", string(users))
	}
	return env, nil
}

// repoRoot walks up from the working directory (a test's package directory)
// to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func randomString() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
