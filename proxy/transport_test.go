package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

func TestWebSocketThroughProxy(t *testing.T) {
	t.Parallel()
	upgrader := websocket.Upgrader{}
	h := newHarness(t, withUpstreamHandler("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		user := r.Header.Get("X-Auth-Request-User")
		for {
			mt, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(mt, []byte(user+": "+string(msg))); err != nil {
				return
			}
		}
	}))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	u, _ := url.Parse(h.url)
	hdr := http.Header{}
	for _, c := range b.jar.Cookies(u) {
		hdr.Add("Cookie", c.Name+"="+c.Value)
	}
	conn, resp, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+u.Host+"/ws", hdr)
	if err != nil {
		t.Fatalf("dial through proxy: %v (response %v)", err, resp)
	}
	defer conn.Close()
	for i := range 3 {
		msg := fmt.Sprintf("hello %d", i)
		if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if want := "ann: " + msg; string(got) != want {
			t.Errorf("echo %q, want %q", got, want)
		}
	}
	// Without a session the upgrade is refused.
	if _, resp, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+u.Host+"/ws", nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unauthenticated upgrade: err %v, response %v", err, resp)
	}
}

func TestStreamingResponsePassesThrough(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := newHarness(t, withUpstreamHandler("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	resp := b.do(http.MethodGet, h.url+"/stream", false)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	buf := make([]byte, len("data: first\n\n"))
	// The first event arrives while the upstream still holds the response
	// open: the proxy does not buffer it.
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "data: first\n\n" {
		t.Fatalf("first event: %q, %v", buf, err)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "data: second\n\n" {
		t.Errorf("second event: %q", rest)
	}
}

// TestInterleavedUsers: requests of two users, interleaved and concurrent,
// each reach the upstream with their own identity.
func TestInterleavedUsers(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.AddUser(idptest.User{Subject: "bob", Email: "bob@example.com", Groups: []string{"ops"}})
	h := newHarness(t, withIdP(idp))
	h.waitDiscovered()
	users := map[string]*browser{"ann": newBrowser(t), "bob": newBrowser(t)}
	for name, b := range users {
		h.login(b, "/", name)
	}
	const total = 200
	var wg sync.WaitGroup
	errs := make(chan string, total)
	for i := range total {
		name := []string{"ann", "bob"}[i%2]
		b := users[name]
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/item/%d", h.url, i), nil)
			resp, err := b.client.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Sprintf("request %d: status %d", i, resp.StatusCode)
				return
			}
			want := fmt.Sprintf(`"X-Auth-Request-User":[%q]`, name)
			if !strings.Contains(string(body), want) || !strings.Contains(string(body), fmt.Sprintf(`"path":"/item/%d"`, i)) {
				errs <- fmt.Sprintf("request %d of %s reached the upstream as %s", i, name, body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := h.up.requests.Load(); n != total {
		t.Errorf("upstream saw %d requests, want %d", n, total)
	}
}

func TestSeveralHosts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) {
		host := strings.TrimPrefix(c.RedirectURLs[0], "http://")
		host = strings.TrimSuffix(host, "/_gatehouse/callback")
		_, port, _ := strings.Cut(host, ":")
		c.RedirectURLs = []string{
			"http://app.example:" + port + "/_gatehouse/callback",
			"http://Other.Example:" + port + "/_gatehouse/callback",
		}
	}))
	h.waitDiscovered()
	_, port, _ := strings.Cut(strings.TrimPrefix(h.url, "http://"), ":")
	for _, tc := range []struct{ host, want string }{
		{"app.example:" + port, "http://app.example:" + port + "/_gatehouse/callback"},
		{"OTHER.example:" + port, "http://Other.Example:" + port + "/_gatehouse/callback"},
	} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/x", nil)
		req.Host = tc.host
		req.Header.Set("Accept", "text/html")
		resp, err := newBrowser(t).client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		auth := location(t, resp)
		if got := auth.Query().Get("redirect_uri"); got != tc.want {
			t.Errorf("Host %s: redirect_uri %q, want %q", tc.host, got, tc.want)
		}
	}
	for _, host := range []string{"evil.example:" + port, "app.example", "app.example:1"} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/x", nil)
		req.Host = host
		req.Header.Set("Accept", "text/html")
		resp, err := newBrowser(t).client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("login from Host %s: status %d, want 400", host, resp.StatusCode)
		}
	}
}

// TestGracefulShutdown: cancelling the server's context stops accepting
// connections and lets an in-flight request finish.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	finish := make(chan struct{})
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/slow$"} }),
		withUpstreamHandler("/slow", func(w http.ResponseWriter, _ *http.Request) {
			close(started)
			<-finish
			fmt.Fprint(w, "done")
		}))
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(h.url + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{string(b), err}
	}()
	<-started
	h.cancel()
	// New connections are refused once shutdown has begun.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := (&http.Client{Timeout: time.Second}).Get(h.url + "/other")
		if err != nil {
			break
		}
		c.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("proxy still accepts connections after shutdown began")
		}
		time.Sleep(5 * time.Millisecond) //nolint:forbidigo // polling a real listener
	}
	close(finish)
	r := <-res
	if r.err != nil || r.body != "done" {
		t.Errorf("in-flight request: %q, %v", r.body, r.err)
	}
	select {
	case err := <-h.done:
		h.done <- err // for the harness cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after draining")
	}
}

// TestOnlyWebSocketUpgrades: an Upgrade to anything but WebSocket (h2c
// above all) is refused before it reaches the app, on skip-auth paths and
// for signed-in users alike, even when the app would switch (DESIGN.md
// behaviour 12).
func TestOnlyWebSocketUpgrades(t *testing.T) {
	t.Parallel()
	// An app that switches to whatever protocol it is asked for.
	switcher := func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", r.Header.Get("Upgrade"))
		_ = rw.Flush()
	}
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/public/"} }),
		withUpstreamHandler("/public/switch", switcher), withUpstreamHandler("/switch", switcher))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	for _, path := range []string{"/public/switch", "/switch"} {
		for _, upgrade := range []string{"h2c", "H2C", "websocket, h2c", "tls/1.2", "websocketx"} {
			before := h.up.requests.Load()
			resp := raw(t, http.MethodGet, h.url+path, cookie, "Connection", "Upgrade, HTTP2-Settings", "Upgrade", upgrade, "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s with Upgrade %q: status %d, want 400", path, upgrade, resp.StatusCode)
			}
			if n := h.up.requests.Load() - before; n != 0 {
				t.Errorf("%s with Upgrade %q reached the app", path, upgrade)
			}
		}
	}
}
