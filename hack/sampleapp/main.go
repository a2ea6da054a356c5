// Command sampleapp is the demo's protected app. It shows who Gatehouse says
// the user is, and verifies the X-Gatehouse-Identity JWT against the
// sidecar's JWKS the way a real app should: signature (ES256), issuer,
// audience and expiry.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

var page = template.Must(template.New("p").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gatehouse demo app</title>
<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;color:#1d2330}
table{border-collapse:collapse}td{padding:.3rem .8rem;border-bottom:1px solid #e3e6ec;vertical-align:top}
code{background:#f3f4f7;padding:.1rem .3rem;border-radius:4px}.ok{color:#137333}.bad{color:#b3261e}
button{background:#2f5bea;color:#fff;border:0;border-radius:8px;padding:.5rem 1rem;font-size:1rem}</style></head>
<body><h1>Hello, {{.User}}</h1>
<p>This page is the demo app. It never saw a password or a token: the Gatehouse sidecar in front of it did the login and tells it who you are.</p>
<table>
<tr><td>X-Auth-Request-User</td><td><code>{{.Sub}}</code></td></tr>
<tr><td>X-Auth-Request-Email</td><td><code>{{.Email}}</code></td></tr>
<tr><td>X-Auth-Request-Preferred-Username</td><td><code>{{.Username}}</code></td></tr>
<tr><td>X-Auth-Request-Groups</td><td><code>{{.Groups}}</code></td></tr>
<tr><td>X-Gatehouse-Identity</td><td>{{if .Verified}}<span class="ok">verified</span>: iss <code>{{.Claims.Issuer}}</code>, sub <code>{{.Claims.Subject}}</code>, expires {{.Expires}}{{else}}<span class="bad">not verified: {{.VerifyError}}</span>{{end}}</td></tr>
<tr><td>Path</td><td><code>{{.Path}}</code></td></tr>
</table>
<form method="post" action="{{.Prefix}}/logout"><p><button type="submit">Sign out</button></p></form>
</body></html>`))

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	jwksURL := flag.String("jwks-url", "http://127.0.0.1:4180/_gatehouse/jwks.json", "the sidecar's JWKS")
	issuer := flag.String("issuer", "http://127.0.0.1:4180", "expected iss of X-Gatehouse-Identity (the external origin)")
	audience := flag.String("audience", "http://127.0.0.1:8080", "expected aud of X-Gatehouse-Identity (the sidecar's --upstream)")
	prefix := flag.String("path-prefix", "/_gatehouse", "the sidecar's --path-prefix")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	v := &verifier{jwksURL: *jwksURL, issuer: *issuer, audience: *audience}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		claims, err := v.verify(r.Context(), r.Header.Get("X-Gatehouse-Identity"))
		data := map[string]any{
			"User": r.Header.Get("X-Auth-Request-Preferred-Username"), "Sub": r.Header.Get("X-Auth-Request-User"),
			"Email": r.Header.Get("X-Auth-Request-Email"), "Username": r.Header.Get("X-Auth-Request-Preferred-Username"),
			"Groups": r.Header.Get("X-Auth-Request-Groups"), "Path": r.URL.RequestURI(), "Prefix": *prefix,
			"Verified": err == nil, "Claims": claims,
		}
		if err != nil {
			data["VerifyError"] = err.Error()
		} else {
			data["Expires"] = claims.Expiry.Time().Format(time.RFC3339)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, data)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.WithoutCancel(ctx))
	}()
	log.Info("Sample app listening", "address", *listen)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("Sample app failed", "error", err)
		os.Exit(1)
	}
}

// verifier checks identity assertions; it fetches the JWKS on every miss,
// which is fine for a demo (a real app caches it and refetches on an
// unknown kid).
type verifier struct {
	jwksURL, issuer, audience string
}

func (v *verifier) verify(ctx context.Context, raw string) (*jwt.Claims, error) {
	if raw == "" {
		return nil, errors.New("no X-Gatehouse-Identity header")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.jwksURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	var claims jwt.Claims
	if err := tok.Claims(&set, &claims); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.audience}, Time: time.Now()}, 30*time.Second); err != nil {
		return nil, err
	}
	return &claims, nil
}
