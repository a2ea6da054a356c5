package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// options are the bench's flags.
type options struct {
	gatehouse   string
	wrk         string
	duration    time.Duration
	warmup      time.Duration
	connections int
	threads     int
	markdown    string
}

func parseFlags(args []string, errOut io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.StringVar(&o.gatehouse, "gatehouse", "bin/gatehouse", "the gatehouse binary to measure")
	fs.StringVar(&o.wrk, "wrk", "wrk", "the wrk binary (name in PATH or path)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long wrk loads each configuration (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each measurement (whole seconds; 0 for none)")
	fs.IntVar(&o.connections, "connections", 32, "concurrent wrk connections")
	fs.IntVar(&o.threads, "threads", 1, "wrk threads")
	fs.StringVar(&o.markdown, "markdown", "", "also write the results as Markdown to this file")
	fs.Usage = func() {
		fmt.Fprintf(errOut, "Usage: bench [flags]\n\n"+
			"Measures bin/gatehouse proxy against a plain httputil.ReverseProxy with wrk.\n"+
			"Everything listens on 127.0.0.1; Linux only (/proc).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var errs []error
	if o.duration < time.Second || o.duration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("-duration: %v is not a whole number of seconds (wrk takes no fractions)", o.duration))
	}
	if o.warmup < 0 || o.warmup%time.Second != 0 {
		errs = append(errs, fmt.Errorf("-warmup: %v is not a whole number of seconds", o.warmup))
	}
	if o.connections < 1 {
		errs = append(errs, errors.New("-connections: need at least 1"))
	}
	if o.threads < 1 || o.threads > o.connections {
		errs = append(errs, errors.New("-threads: need at least 1 and at most -connections"))
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	return o, nil
}

// Names of the configurations, in the order they run.
const (
	confPlain    = "plain proxy"
	confSession  = "gatehouse, session"
	confRedirect = "gatehouse, no session (302)"
	confRedis    = "gatehouse, Redis session"
	// confRedisUncached is the Redis store with --redis-client-cache=false.
	confRedisUncached = "gatehouse, Redis, no client cache"
)

// benchPath is the page every configuration requests.
const benchPath = "/bench"

// cookieName is the --cookie-name the bench gives Gatehouse.
const cookieName = "gatehouse"

// result is one configuration's measurements.
type result struct {
	name        string
	wrk         wrkResult
	cpuSeconds  float64       // the proxy's user+system CPU during the measured load
	upstream    bool          // whether requests reach the upstream
	upstreamReq int64         // requests the upstream served from a second into the load on
	newConns    int64         // connections the proxy opened to the upstream over the same span
	rssIdleKiB  int64         // VmRSS before the load
	rssAnonKiB  int64         // its anonymous part (RssAnon): heap, stacks; the rest maps the binary
	rssPeakKiB  int64         // VmHWM after the load
	startup     time.Duration // 0: not measured
}

func (r result) cpuPer10k() float64 {
	return r.cpuSeconds / float64(r.wrk.Requests) * 10_000
}

func (r result) connsPer1k() float64 {
	if r.upstreamReq == 0 {
		return 0
	}
	return float64(r.newConns) / float64(r.upstreamReq) * 1_000
}

// readIdle reads the idle memory of the proxy process pid.
func (r *result) readIdle(pid int) error {
	var err1, err2 error
	r.rssIdleKiB, err1 = memKiB(pid, "VmRSS")
	r.rssAnonKiB, err2 = memKiB(pid, "RssAnon")
	return errors.Join(err1, err2)
}

// bench holds what the configurations share.
type bench struct {
	o         options
	wrk       string
	gatehouse string
	self      string
	hz        int64 // clock ticks a second
	dir       string
	up        *upstream
	idp       *idp
	procs     []*proc
}

func runBench(ctx context.Context, o options, out io.Writer) (err error) {
	b := &bench{o: o}
	if b.wrk, err = exec.LookPath(o.wrk); err != nil {
		return fmt.Errorf("wrk: %w; %s", err, wrkInstallHint)
	}
	if b.gatehouse, err = filepath.Abs(o.gatehouse); err != nil {
		return err
	}
	if _, err := os.Stat(b.gatehouse); err != nil {
		return fmt.Errorf("-gatehouse: %w; build it with: go build -o bin/gatehouse ./cmd/gatehouse", err)
	}
	if b.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find the bench binary for the plain proxy: %w", err)
	}
	b.hz = clockTicks(ctx)
	load := loadAverage()
	if b.dir, err = os.MkdirTemp("", "gatehouse-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	if b.up, err = startUpstream(); err != nil {
		return fmt.Errorf("start upstream: %w", err)
	}
	defer b.up.close()
	if b.idp, err = startIdP(); err != nil {
		return err
	}
	defer b.idp.close()
	// Every process started below is stopped by pid here, also on errors,
	// before the upstream and the IdP close.
	defer func() {
		for _, p := range b.procs {
			if serr := p.stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	access, refresh, err := b.idp.sampleTokens(ctx)
	if err != nil {
		return err
	}

	plain, err := b.runPlain(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", confPlain, err)
	}
	session, cookie, err := b.runSession(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", confSession, err)
	}
	tokens := tokenSizes{id: len(b.idp.idToken()), access: access, refresh: refresh}
	redirect, err := b.runRedirect(ctx, cookie, &session)
	if err != nil {
		return fmt.Errorf("%s: %w", confRedirect, err)
	}
	redis, redisUncached, prop, err := b.runRedis(ctx)
	if err != nil {
		return err
	}

	rep := report{
		setup: fmt.Sprintf("wrk -t%d -c%d -d%ds --latency (after %ds of warm-up) on %s (load average %s before the run), %s",
			o.threads, o.connections, int(o.duration/time.Second), int(o.warmup/time.Second), cpuModel(), load, b.version(ctx)),
		results: []result{plain, session, redirect, redis, redisUncached},
		prop:    prop,
		cookie:  cookie,
		tokens:  tokens,
	}
	rep.writeText(out)
	if o.markdown != "" {
		if err := os.WriteFile(o.markdown, []byte(rep.markdown()), 0o644); err != nil {
			return fmt.Errorf("-markdown: %w", err)
		}
	}
	return nil
}

// runPlain measures the reference: the bench re-executed as a plain
// reverse proxy.
func (b *bench) runPlain(ctx context.Context) (result, error) {
	addr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	p, err := b.start(confPlain, b.self, []string{plainCommand, "-listen", addr, "-upstream", b.up.url})
	if err != nil {
		return result{}, err
	}
	base := "http://" + addr
	r := result{name: confPlain, upstream: true}
	if r.startup, err = firstOK(ctx, p, base+benchPath, ""); err != nil {
		return r, err
	}
	if err := r.readIdle(p.pid()); err != nil {
		return r, err
	}
	if err := b.load(ctx, p, &r, base+benchPath); err != nil {
		return r, err
	}
	return r, p.stop()
}

// runSession starts Gatehouse, logs in once and loads it with that session.
// It returns the session cookie for the next run.
func (b *bench) runSession(ctx context.Context) (result, sessionCookie, error) {
	p, base, metrics, err := b.startGatehouse(ctx, "gatehouse (session)")
	if err != nil {
		return result{}, sessionCookie{}, err
	}
	if err := waitDiscovered(ctx, p, metrics); err != nil {
		return result{}, sessionCookie{}, err
	}
	cookie, err := login(ctx, base, b.idp.URL, benchPath, cookieName)
	if err != nil {
		return result{}, sessionCookie{}, p.failure(fmt.Errorf("log in: %w", err))
	}
	if err := expectUpstream(ctx, base+benchPath, cookie.header); err != nil {
		return result{}, cookie, p.failure(err)
	}
	r := result{name: confSession, upstream: true}
	if err := r.readIdle(p.pid()); err != nil {
		return r, cookie, err
	}
	if err := b.load(ctx, p, &r, base+benchPath, "Cookie: "+cookie.header); err != nil {
		return r, cookie, err
	}
	return r, cookie, p.stop()
}

// runRedirect starts a fresh Gatehouse and times its first proxied 200 with
// the cookie the previous process minted (the IdP is already up), which it
// records on session, then loads it with navigations without a session.
func (b *bench) runRedirect(ctx context.Context, cookie sessionCookie, session *result) (result, error) {
	p, base, _, err := b.startGatehouse(ctx, "gatehouse (no session)")
	if err != nil {
		return result{}, err
	}
	if session.startup, err = firstOK(ctx, p, base+benchPath, cookie.header); err != nil {
		return result{}, err
	}
	r := result{name: confRedirect}
	if err := r.readIdle(p.pid()); err != nil {
		return r, err
	}
	// The load must see what it is meant to: a redirect to the IdP.
	auth, err := redirectOf(ctx, noRedirects(nil), base+benchPath, true)
	if err != nil {
		return r, p.failure(err)
	}
	if !strings.HasPrefix(auth.String(), b.idp.URL+"/auth") {
		return r, fmt.Errorf("navigation without a session went to %s, want the IdP", stripQuery(auth.String()))
	}
	if err := b.load(ctx, p, &r, base+benchPath, "Accept: "+navigationAccept); err != nil {
		return r, err
	}
	return r, p.stop()
}

// runRedis starts a redis-server on loopback and, against it, Gatehouse
// with the Redis session store twice: with the client-side cache (records
// served from memory, invalidated by Redis) and without it (one round trip
// a request). Each logs in and is loaded like the cookie store. Then it
// times logouts across two replicas (see logoutPropagation).
func (b *bench) runRedis(ctx context.Context) (cached, uncached result, prop propagation, err error) {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return cached, uncached, prop, fmt.Errorf("redis-server: %w; install it with: apt-get install -y redis-server", err)
	}
	raddr, err := freeAddr()
	if err != nil {
		return cached, uncached, prop, err
	}
	host, port, _ := strings.Cut(raddr, ":")
	rp, err := b.start("redis-server", redisBin, []string{"--bind", host, "--port", port, "--save", "", "--appendonly", "no", "--dir", b.dir})
	if err != nil {
		return cached, uncached, prop, err
	}
	if err := waitTCP(ctx, raddr); err != nil {
		return cached, uncached, prop, rp.failure(err)
	}
	redisURL := "redis://" + raddr + "/0"
	if cached, err = b.runRedisStore(ctx, confRedis, redisURL, true); err != nil {
		return cached, uncached, prop, fmt.Errorf("%s: %w", confRedis, err)
	}
	if uncached, err = b.runRedisStore(ctx, confRedisUncached, redisURL, false); err != nil {
		return cached, uncached, prop, fmt.Errorf("%s: %w", confRedisUncached, err)
	}
	if prop, err = b.logoutPropagation(ctx, redisURL); err != nil {
		return cached, uncached, prop, fmt.Errorf("logout across replicas: %w", err)
	}
	return cached, uncached, prop, rp.stop()
}

// runRedisStore measures one Gatehouse with the Redis store.
func (b *bench) runRedisStore(ctx context.Context, name, redisURL string, cache bool) (result, error) {
	p, base, metrics, err := b.startGatehouse(ctx, name, redisArgs(redisURL, cache)...)
	if err != nil {
		return result{}, err
	}
	if err := waitDiscovered(ctx, p, metrics); err != nil {
		return result{}, err
	}
	cookie, err := login(ctx, base, b.idp.URL, benchPath, cookieName)
	if err != nil {
		return result{}, p.failure(fmt.Errorf("log in: %w", err))
	}
	if err := expectUpstream(ctx, base+benchPath, cookie.header); err != nil {
		return result{}, p.failure(err)
	}
	r := result{name: name, upstream: true}
	if err := r.readIdle(p.pid()); err != nil {
		return r, err
	}
	if err := b.load(ctx, p, &r, base+benchPath, "Cookie: "+cookie.header); err != nil {
		return r, err
	}
	return r, p.stop()
}

func redisArgs(redisURL string, cache bool) []string {
	return []string{"--session-store", "redis", "--redis-url", redisURL, fmt.Sprintf("--redis-client-cache=%t", cache)}
}

// propagationRounds is how many logouts logoutPropagation times.
const propagationRounds = 30

// propagation is how long logouts on one replica took to reach another.
type propagation struct {
	took []time.Duration // sorted
}

func (p propagation) percentile(q float64) time.Duration {
	if len(p.took) == 0 {
		return 0
	}
	return p.took[min(len(p.took)-1, int(q*float64(len(p.took))))]
}

// logoutPropagation runs two Gatehouse replicas with the client-side cache
// on one Redis. Each round logs in on replica a, has replica b serve the
// session (so b holds it in its cache), logs out on a, and times from the
// logout's POST until b first refuses the session (401; b is polled
// without pause).
func (b *bench) logoutPropagation(ctx context.Context, redisURL string) (propagation, error) {
	var prop propagation
	pa, baseA, metricsA, err := b.startGatehouse(ctx, "gatehouse (replica a)", redisArgs(redisURL, true)...)
	if err != nil {
		return prop, err
	}
	pb, baseB, metricsB, err := b.startGatehouse(ctx, "gatehouse (replica b)", redisArgs(redisURL, true)...)
	if err != nil {
		return prop, err
	}
	if err := waitDiscovered(ctx, pa, metricsA); err != nil {
		return prop, err
	}
	if err := waitDiscovered(ctx, pb, metricsB); err != nil {
		return prop, err
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	status := func(cookie string) (int, error) {
		resp, err := get(ctx, c, baseB+benchPath, false, cookie)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for range propagationRounds {
		cookie, err := login(ctx, baseA, b.idp.URL, benchPath, cookieName)
		if err != nil {
			return prop, pa.failure(fmt.Errorf("log in: %w", err))
		}
		for range 2 {
			code, err := status(cookie.header)
			if err != nil {
				return prop, pb.failure(fmt.Errorf("replica b with a's session: %w", err))
			}
			if code != http.StatusOK {
				return prop, pb.failure(fmt.Errorf("replica b with a's session: status %d, want 200", code))
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseA+"/_gatehouse/logout", nil)
		if err != nil {
			return prop, err
		}
		req.Header.Set("Cookie", cookie.header)
		req.Header.Set("Origin", baseA)
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return prop, pa.failure(fmt.Errorf("log out: %w", err))
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			return prop, pa.failure(fmt.Errorf("log out: status %d, want a redirect", resp.StatusCode))
		}
		for {
			code, err := status(cookie.header)
			if err != nil {
				return prop, pb.failure(err)
			}
			if code == http.StatusUnauthorized {
				break
			}
			if code != http.StatusOK {
				return prop, pb.failure(fmt.Errorf("replica b after the logout: status %d, want 200 until it learns of it, then 401", code))
			}
			if time.Since(start) > 10*time.Second {
				return prop, errors.New("replica b still serves the session 10s after the logout on replica a")
			}
		}
		prop.took = append(prop.took, time.Since(start))
	}
	slices.Sort(prop.took)
	if err := pa.stop(); err != nil {
		return prop, err
	}
	return prop, pb.stop()
}

// waitTCP waits until something listens on addr.
func waitTCP(ctx context.Context, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after 10s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// start starts a process and remembers it for the final cleanup.
func (b *bench) start(name, path string, args []string) (*proc, error) {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEHOUSE_") { // the flags below are the whole configuration
			env = append(env, kv)
		}
	}
	p, err := startProc(name, path, args, env)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	return p, nil
}

// startGatehouse starts bin/gatehouse proxy in front of the upstream with
// the fake IdP, on fresh loopback ports. Every run uses the same cookie
// secret, so a cookie one run minted is valid in the next.
func (b *bench) startGatehouse(ctx context.Context, name string, extra ...string) (p *proc, base, metrics string, err error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", "", err
	}
	maddr, err := freeAddr()
	if err != nil {
		return nil, "", "", err
	}
	// Each file is written once: rewriting one while another Gatehouse
	// reads it at start (the two replicas of the logout timing) could hand
	// that process an empty file.
	clientSecret := filepath.Join(b.dir, "client-secret")
	cookieSecret := filepath.Join(b.dir, "cookie-secret")
	for _, f := range []struct{ path, value string }{{clientSecret, b.idp.ClientSecret}, {cookieSecret, randomSecret()}} {
		if _, err := os.Stat(f.path); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(f.path, []byte(f.value+"\n"), 0o600); err != nil {
				return nil, "", "", err
			}
		}
	}
	base = "http://" + addr
	p, err = b.start(name, b.gatehouse, append([]string{
		"proxy",
		"--listen-address", addr,
		"--metrics-address", maddr,
		"--upstream", b.up.url,
		"--issuer-url", b.idp.URL,
		"--client-id", b.idp.ClientID,
		"--client-secret-file", clientSecret,
		"--cookie-secret-file", cookieSecret,
		"--cookie-name", cookieName,
		"--cookie-secure=false",
		"--redirect-url", base + "/_gatehouse/callback",
		"--log-level=warn",
		"--shutdown-timeout", "2s",
	}, extra...))
	if err != nil {
		return nil, "", "", err
	}
	return p, base, "http://" + maddr, ctx.Err()
}

// load warms p up, then runs the measured wrk load against url and fills
// in r.
func (b *bench) load(ctx context.Context, p *proc, r *result, url string, headers ...string) error {
	run := wrkRun{path: b.wrk, threads: b.o.threads, connections: b.o.connections, duration: b.o.warmup, url: url, headers: headers}
	if b.o.warmup > 0 {
		if _, err := run.run(ctx); err != nil {
			return p.failure(fmt.Errorf("warm-up: %w", err))
		}
	}
	cpu0, err := cpuTicks(p.pid())
	if err != nil {
		return p.failure(err)
	}
	// The end of the warm-up cancels the requests then in flight, and the
	// proxy drops those upstream connections; the first moments of the
	// measured load dial them again. Connections are therefore counted
	// from a moment into the load on, against the requests the upstream
	// served over the same span, which shows steady-state churn.
	settle := min(time.Second, b.o.duration/5)
	type count struct{ conns, reqs int64 }
	atSettle := make(chan count, 1)
	go func() {
		t := time.NewTimer(settle)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		atSettle <- count{b.up.conns.Load(), b.up.requests.Load()}
	}()
	run.duration = b.o.duration
	r.wrk, err = run.run(ctx)
	start := <-atSettle
	if err != nil {
		return p.failure(err)
	}
	cpu1, err := cpuTicks(p.pid())
	if err != nil {
		return p.failure(err)
	}
	r.cpuSeconds = float64(cpu1-cpu0) / float64(b.hz)
	r.newConns = b.up.conns.Load() - start.conns
	r.upstreamReq = b.up.requests.Load() - start.reqs
	if r.rssPeakKiB, err = memKiB(p.pid(), "VmHWM"); err != nil {
		return p.failure(err)
	}
	if gone, _ := p.exited(); gone {
		return p.failure(errors.New("the proxy exited during the load"))
	}
	return nil
}

// firstOK polls url every millisecond from the moment p was started until
// it answers 200, and returns how long that took.
func firstOK(ctx context.Context, p *proc, url, cookie string) (time.Duration, error) {
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 2 * time.Second}
	deadline := p.started.Add(10 * time.Second)
	var last error
	for {
		resp, err := get(ctx, c, url, false, cookie)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				took := time.Since(p.started)
				if string(body) != upstreamBody {
					return took, p.failure(fmt.Errorf("GET %s: 200 but not from the upstream: %.200s", url, body))
				}
				return took, nil
			}
			err = fmt.Errorf("GET %s: status %d: %.200s", url, resp.StatusCode, body)
		}
		last = err
		if gone, _ := p.exited(); gone {
			return 0, p.failure(last)
		}
		if time.Now().After(deadline) {
			return 0, p.failure(fmt.Errorf("no 200 within 10s of starting: %w", last))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// waitDiscovered polls Gatehouse's /readyz until it has discovered the IdP,
// which logins need.
func waitDiscovered(ctx context.Context, p *proc, metrics string) error {
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := get(ctx, c, metrics+"/readyz", false, "")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "identity provider: discovered") {
				return nil
			}
		}
		if gone, _ := p.exited(); gone || time.Now().After(deadline) {
			return p.failure(errors.New("not ready with the IdP discovered within 10s"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// expectUpstream checks that url with cookie reaches the upstream.
func expectUpstream(ctx context.Context, url, cookie string) error {
	resp, err := get(ctx, noRedirects(nil), url, false, cookie)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK || string(body) != upstreamBody {
		return fmt.Errorf("GET %s with the session: status %d, want 200 from the upstream: %.200s", url, resp.StatusCode, body)
	}
	return nil
}

// randomSecret makes a cookie secret (52 characters of crypto/rand).
func randomSecret() string { return rand.Text() + rand.Text() }

// version is what `gatehouse version` prints, for the report.
func (b *bench) version(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, b.gatehouse, "version").Output()
	if err != nil {
		return "gatehouse (version unknown)"
	}
	v := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	if !strings.HasPrefix(v, "gatehouse") {
		v = "gatehouse " + v
	}
	return v
}
