package broker

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

func TestRoute(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path, provider, endpoint string
		ok                       bool
	}{
		{"/v1/providers/main/token", "main", "token", true},
		{"/v1/providers/main/revoke", "main", "revoke", true},
		{"/v1/providers/a%2Fb/token", "a/b", "token", true},
		{"/v1/providers/main/token/", "", "", false},
		{"/v1/providers/main/introspect", "", "", false},
		{"/v1/providers//token", "", "", false},
		{"/v1/providers/main", "", "", false},
		{"/v1/providers/a/b/token", "", "", false},
		{"/v1/providers/%zz/token", "", "", false},
		{"/v2/providers/main/token", "", "", false},
		{"/", "", "", false},
	}
	for _, tc := range tests {
		p, e, ok := route(tc.path)
		if p != tc.provider || e != tc.endpoint || ok != tc.ok {
			t.Errorf("route(%q) = %q, %q, %v; want %q, %q, %v", tc.path, p, e, ok, tc.provider, tc.endpoint, tc.ok)
		}
	}
}

// statusOf is the HTTP status an error answers with; 0 for none.
func statusOf(err error) int {
	if err == nil {
		return 0
	}
	r, ok := errors.AsType[*refusal](err)
	if !ok {
		return http.StatusInternalServerError
	}
	return r.status
}

func codeOf(err error) string {
	r, _ := errors.AsType[*refusal](err)
	if r == nil {
		return ""
	}
	return r.code
}

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // RFC 7636 appendix B

func TestParseCall(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		endpoint string
		body     string
		wantOp   string
		wantForm url.Values
		wantID   string
		wantCode string // the refusal's OAuth error code
	}{
		{
			name: "exchange keeps only the exchange's parameters", endpoint: endpointToken,
			body:   "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fa%2Fcb&code_verifier=" + verifier + "&client_id=app&client_secret=s&client_assertion=x&resource=r&scope=admin",
			wantOp: OpExchange, wantID: "app",
			wantForm: url.Values{"grant_type": {"authorization_code"}, "code": {"c"}, "redirect_uri": {"https://a/cb"}, "code_verifier": {verifier}},
		},
		{
			name: "refresh with scope", endpoint: endpointToken,
			body:     "grant_type=refresh_token&refresh_token=r&scope=openid+email&redirect_uri=https%3A%2F%2Fa%2Fcb&code=c",
			wantOp:   OpRefresh,
			wantForm: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"r"}, "scope": {"openid email"}},
		},
		{
			name: "empty parameters are absent", endpoint: endpointToken,
			body:     "grant_type=refresh_token&refresh_token=r&scope=&client_id=",
			wantOp:   OpRefresh,
			wantForm: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"r"}},
		},
		{
			name: "revoke", endpoint: endpointRevoke,
			body:     "token=t&token_type_hint=refresh_token&grant_type=refresh_token&client_secret=s",
			wantOp:   OpRevoke,
			wantForm: url.Values{"token": {"t"}, "token_type_hint": {"refresh_token"}},
		},
		{name: "no grant type", endpoint: endpointToken, body: "code=c", wantCode: "invalid_request"},
		{name: "client credentials", endpoint: endpointToken, body: "grant_type=client_credentials", wantCode: "unsupported_grant_type"},
		{name: "device code", endpoint: endpointToken, body: "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=d", wantCode: "unsupported_grant_type"},
		{name: "exchange without code", endpoint: endpointToken, body: "grant_type=authorization_code&redirect_uri=https%3A%2F%2Fa%2Fcb&code_verifier=" + verifier, wantCode: "invalid_request"},
		{name: "exchange without redirect_uri", endpoint: endpointToken, body: "grant_type=authorization_code&code=c&code_verifier=" + verifier, wantCode: "invalid_request"},
		{name: "exchange without verifier", endpoint: endpointToken, body: "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fa%2Fcb", wantCode: "invalid_request"},
		{name: "short verifier", endpoint: endpointToken, body: "grant_type=authorization_code&code=c&redirect_uri=x&code_verifier=abc", wantCode: "invalid_request"},
		{name: "verifier with a space", endpoint: endpointToken, body: "grant_type=authorization_code&code=c&redirect_uri=x&code_verifier=" + url.QueryEscape(strings.Repeat("a", 42)+" "), wantCode: "invalid_request"},
		{name: "refresh without token", endpoint: endpointToken, body: "grant_type=refresh_token", wantCode: "invalid_request"},
		{name: "revoke without token", endpoint: endpointRevoke, body: "token_type_hint=access_token", wantCode: "invalid_request"},
		{name: "repeated parameter", endpoint: endpointToken, body: "grant_type=refresh_token&refresh_token=a&refresh_token=b", wantCode: "invalid_request"},
		{name: "repeated empty parameter", endpoint: endpointToken, body: "grant_type=refresh_token&refresh_token=a&client_id=&client_id=x", wantCode: "invalid_request"},
		{name: "not a form", endpoint: endpointToken, body: "grant_type=%zz", wantCode: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := decodeCall(tc.endpoint, tc.body)
			if tc.wantCode != "" {
				if codeOf(err) != tc.wantCode || statusOf(err) != http.StatusBadRequest {
					t.Fatalf("err %v (%s, %d), want %s 400", err, codeOf(err), statusOf(err), tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.op != tc.wantOp || c.clientID != tc.wantID {
				t.Errorf("op %q clientID %q, want %q %q", c.op, c.clientID, tc.wantOp, tc.wantID)
			}
			if diff := cmp.Diff(tc.wantForm, c.form); diff != "" {
				t.Errorf("form passed on (-want +got):\n%s", diff)
			}
		})
	}
}

// decodeCall is what the handler does with a body: parse it, then read
// the call.
func decodeCall(endpoint, body string) (call, error) {
	form, err := parseForm(body)
	if err != nil {
		return call{}, err
	}
	return parseCall(endpoint, form)
}

func TestValidVerifier(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		verifier:                      true,
		strings.Repeat("a", 43):       true,
		strings.Repeat("~._-", 32):    true,
		strings.Repeat("a", 42):       false,
		strings.Repeat("a", 129):      false,
		strings.Repeat("a", 42) + "+": false,
		strings.Repeat("a", 42) + "/": false,
		strings.Repeat("é", 43):       false,
	} {
		if got := validVerifier(v); got != want {
			t.Errorf("validVerifier(%q) = %v, want %v", v, got, want)
		}
	}
}

// testProviders are a providers file for the pure checks: main serves a,
// shared serves a and b, copied is in copy mode for everyone, open serves
// every namespace.
func testProviders(t testing.TB) *controllers.FileConfig {
	t.Helper()
	fc, err := controllers.ParseFile([]byte(`
providers:
  - {name: main, issuerURL: https://idp.example.com, clientID: app, clientSecretRef: {name: s, key: k}, clientSecretMode: broker, allowedNamespaces: [a]}
  - {name: shared, issuerURL: https://idp.example.com, clientID: app, clientSecretRef: {name: s, key: k}, clientSecretMode: broker, allowedNamespaces: [a, b]}
  - {name: copied, issuerURL: https://idp.example.com, clientID: app, clientSecretRef: {name: s, key: k}, allowedNamespaces: ["*"]}
  - {name: open, issuerURL: https://idp.example.com, clientID: other, clientSecretRef: {name: s, key: k}, clientSecretMode: broker, allowedNamespaces: ["*"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	return fc
}

func TestProviderFor(t *testing.T) {
	t.Parallel()
	fc := testProviders(t)
	tests := []struct {
		provider, ns string
		ok           bool
	}{
		{"main", "a", true},
		{"main", "b", false},
		{"shared", "b", true},
		{"copied", "a", false},
		{"open", "anything", true},
		{"missing", "a", false},
		{"", "a", false},
	}
	for _, tc := range tests {
		p, err := providerFor(fc, tc.provider, tc.ns)
		if (err == nil) != tc.ok || (err != nil && statusOf(err) != http.StatusForbidden) {
			t.Errorf("providerFor(%q, %q) = %v, %v; want ok %v (else 403)", tc.provider, tc.ns, p, err, tc.ok)
		}
	}
}

func TestCheckCall(t *testing.T) {
	t.Parallel()
	fc := testProviders(t)
	registry := map[string]string{
		"a": controllers.BrokerRedirects{"main": {"https://a.example.com/cb"}, "shared": {"https://a.example.com/cb"}}.String(),
		"b": controllers.BrokerRedirects{"shared": {"https://b.example.com/cb"}}.String(),
		"c": "{not json",
	}
	exchange := func(redirect, clientID string) call {
		return call{op: OpExchange, form: url.Values{"redirect_uri": {redirect}}, clientID: clientID}
	}
	tests := []struct {
		name     string
		provider string
		ns       string
		call     call
		registry map[string]string
		ok       bool
	}{
		{"registered", "main", "a", exchange("https://a.example.com/cb", ""), registry, true},
		{"registered with client_id", "main", "a", exchange("https://a.example.com/cb", "app"), registry, true},
		{"foreign client_id", "main", "a", exchange("https://a.example.com/cb", "other"), registry, false},
		{"other namespace's callback", "shared", "b", exchange("https://a.example.com/cb", ""), registry, false},
		{"own callback on the shared provider", "shared", "b", exchange("https://b.example.com/cb", ""), registry, true},
		{"registered for another provider", "open", "b", exchange("https://b.example.com/cb", ""), registry, false},
		{"another host", "main", "a", exchange("https://evil.example.com/cb", ""), registry, false},
		{"namespace not in the registry", "open", "d", exchange("https://a.example.com/cb", ""), registry, false},
		{"unparsable entry", "open", "c", exchange("https://a.example.com/cb", ""), registry, false},
		{"no registry", "main", "a", exchange("https://a.example.com/cb", ""), nil, false},
		{"refresh needs no registry", "main", "a", call{op: OpRefresh, form: url.Values{}}, nil, true},
		{"refresh with a foreign client_id", "main", "a", call{op: OpRefresh, form: url.Values{}, clientID: "other"}, nil, false},
		{"revoke needs no registry", "open", "z", call{op: OpRevoke, form: url.Values{}}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _ := fc.Provider(tc.provider)
			err := checkCall(tc.provider, p, tc.ns, tc.call, tc.registry)
			if (err == nil) != tc.ok || (err != nil && statusOf(err) != http.StatusForbidden) {
				t.Errorf("checkCall = %v, want ok %v (else 403)", err, tc.ok)
			}
		})
	}
}

func TestAuthStyleFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		methods []string
		want    authStyle
	}{
		{nil, authBasic},
		{[]string{"client_secret_basic"}, authBasic},
		{[]string{"client_secret_post", "client_secret_basic"}, authBasic},
		{[]string{"client_secret_post"}, authPost},
		{[]string{"private_key_jwt", "client_secret_post"}, authPost},
		{[]string{"private_key_jwt"}, authBasic},
	}
	for _, tc := range tests {
		if got := authStyleFor(tc.methods); got != tc.want {
			t.Errorf("authStyleFor(%q) = %s, want %s", tc.methods, got, tc.want)
		}
	}
}

func TestCheckEndpoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		issuer, endpoint string
		ok               bool
	}{
		{"https://idp.example.com", "https://idp.example.com/token", true},
		{"https://idp.example.com", "https://other.example.com/token", true},
		{"https://idp.example.com", "http://idp.example.com/token", false},
		{"http://127.0.0.1:5556", "http://127.0.0.1:5556/token", true},
		{"https://idp.example.com", "/token", false},
		{"https://idp.example.com", "ftp://idp.example.com/token", false},
	}
	for _, tc := range tests {
		if err := checkEndpoint(tc.issuer, tc.endpoint); (err == nil) != tc.ok {
			t.Errorf("checkEndpoint(%q, %q) = %v, want ok %v", tc.issuer, tc.endpoint, err, tc.ok)
		}
	}
}

// FuzzDecide feeds the broker's decision, from the path to the form the
// IdP would receive, with untrusted input. It must never panic, and
// whatever it lets through must satisfy the rules, checked here apart
// from the code under test.
func FuzzDecide(f *testing.F) {
	fc := testProviders(f)
	registry := map[string]string{
		"a": controllers.BrokerRedirects{"main": {"https://a.example.com/cb"}, "shared": {"https://a.example.com/cb"}}.String(),
		"b": controllers.BrokerRedirects{"shared": {"https://b.example.com/cb"}, "open": {"https://b.example.com/cb"}}.String(),
		"c": `{"open":"https://c.example.com/cb"}`,
	}
	good := "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fa.example.com%2Fcb&code_verifier=" + verifier
	for _, seed := range []struct{ path, ns, body string }{
		{"/v1/providers/main/token", "a", good},
		{"/v1/providers/main/token", "b", good},
		{"/v1/providers/shared/token", "b", good},
		{"/v1/providers/shared/token", "b", strings.ReplaceAll(good, "a.example.com", "b.example.com")},
		{"/v1/providers/open/token", "c", good},
		{"/v1/providers/main/token", "a", good + "&redirect_uri=https%3A%2F%2Fevil.example.com%2Fcb"},
		{"/v1/providers/main/token", "a", good + "&client_id=other"},
		{"/v1/providers/main/token", "a", good + "&client_secret=x&client_assertion=y"},
		{"/v1/providers/main/token", "a", "grant_type=refresh_token&refresh_token=r&scope=openid"},
		{"/v1/providers/main/revoke", "a", "token=t&token_type_hint=refresh_token"},
		{"/v1/providers/copied/token", "a", good},
		{"/v1/providers/ma%69n/token", "a", good},
		{"/v1/providers/main/token", "a", "grant_type=authorization_code;code=c"},
		{"/v1/providers/main/token", "a", "grant_type=password&username=u&password=p"},
	} {
		f.Add(seed.path, seed.ns, seed.body)
	}
	f.Fuzz(func(t *testing.T, path, ns, body string) {
		name, endpoint, ok := route(path)
		if !ok {
			return
		}
		p, err := providerFor(fc, name, ns)
		if err != nil {
			return
		}
		form, err := parseForm(body)
		if err != nil {
			return
		}
		c, err := parseCall(endpoint, form)
		if err != nil {
			if s := statusOf(err); s != http.StatusBadRequest && s != http.StatusNotFound {
				t.Fatalf("parseCall refused with %d", s)
			}
			return
		}
		if err := checkCall(name, p, ns, c, registry); err != nil {
			if statusOf(err) != http.StatusForbidden {
				t.Fatalf("checkCall refused with %d", statusOf(err))
			}
			return
		}
		// Allowed: the oracle.
		served := slices.Contains(p.AllowedNamespaces, ns) || slices.Contains(p.AllowedNamespaces, "*")
		if !p.Brokered() || !served {
			t.Fatalf("namespace %q allowed on provider %q (%v, mode %q)", ns, name, p.AllowedNamespaces, p.ClientSecretMode)
		}
		raw, _ := url.ParseQuery(body)
		if id := raw["client_id"]; len(id) > 0 && id[0] != "" && id[0] != p.ClientID {
			t.Fatalf("client_id %q allowed for %q", id, p.ClientID)
		}
		for k, vs := range c.form {
			if !slices.Contains([]string{"grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope", "token", "token_type_hint"}, k) {
				t.Fatalf("parameter %q passed on", k)
			}
			if len(vs) != 1 || vs[0] == "" || raw.Get(k) != vs[0] || len(raw[k]) != 1 {
				t.Fatalf("parameter %q passed on as %q, sent as %q", k, vs, raw[k])
			}
		}
		switch c.form.Get("grant_type") {
		case "authorization_code":
			// Whatever else controllers.BrokerRedirects.Allows compares,
			// the code's host must be one the namespace registered.
			host := map[string]string{
				"a/main": "a.example.com", "a/shared": "a.example.com",
				"b/shared": "b.example.com", "b/open": "b.example.com",
			}[ns+"/"+name]
			u, err := url.Parse(c.form.Get("redirect_uri"))
			if err != nil || host == "" || !strings.EqualFold(u.Hostname(), host) || endpoint != endpointToken {
				t.Fatalf("exchange for %s/%s with redirect_uri %q allowed", ns, name, c.form.Get("redirect_uri"))
			}
		case "refresh_token":
			if endpoint != endpointToken || c.form.Has("redirect_uri") || c.form.Has("code") {
				t.Fatalf("refresh passes on %v", c.form)
			}
		case "":
			if endpoint != endpointRevoke || c.form.Get("token") == "" {
				t.Fatalf("call without grant_type at %s: %v", endpoint, c.form)
			}
		default:
			t.Fatalf("grant_type %q passed on", c.form.Get("grant_type"))
		}
	})
}

func TestReadForm(t *testing.T) {
	t.Parallel()
	const form = "grant_type=refresh_token&refresh_token=rt"
	tests := []struct {
		name, contentType, body string
		status                  int
	}{
		{"form", "application/x-www-form-urlencoded", form, 0},
		{"form with a charset", "application/x-www-form-urlencoded; charset=utf-8", form, 0},
		{"a form sent as text", "text/plain", form, http.StatusBadRequest},
		{"JSON", "application/json", `{"grant_type":"refresh_token"}`, http.StatusBadRequest},
		{"no content type", "", form, http.StatusBadRequest},
		{"multipart", "multipart/form-data; boundary=x", form, http.StatusBadRequest},
		{"too large", "application/x-www-form-urlencoded", form + "&x=" + strings.Repeat("a", maxBody), http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, "/v1/providers/main/token?refresh_token=from-the-query", strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			got, err := readForm(httptest.NewRecorder(), r)
			if statusOf(err) != tc.status {
				t.Fatalf("readForm = %v, %v; want status %d", got, err, tc.status)
			}
			if err == nil && got.Get("refresh_token") != "rt" {
				t.Errorf("refresh_token %q, want the body's, not the query's", got.Get("refresh_token"))
			}
		})
	}
}
