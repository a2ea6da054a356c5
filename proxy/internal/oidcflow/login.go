package oidcflow

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gorilla/securecookie"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/redirect"
)

// LoginWindow is how long a started login may take (DESIGN.md behaviour 2).
const LoginWindow = 10 * time.Minute

// MaxLogins bounds the login-state cookies one browser holds; starting one
// more drops the oldest (DESIGN.md behaviour 6).
const MaxLogins = 10

// loginState is what a login-state cookie carries. Each login in progress
// has its own cookie, so several tabs can log in at once.
type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"`
	Redirect string `json:"u"`
	Created  int64  `json:"c"`
}

// loginPrefix returns the name prefix of login-state cookies.
func (f *Flow) loginPrefix() string { return f.cfg.CookieName + "-login-" }

// IsLoginCookie reports whether name is one of this flow's login-state
// cookies.
func (f *Flow) IsLoginCookie(name string) bool { return strings.HasPrefix(name, f.loginPrefix()) }

// Start begins a login: it records state, nonce and PKCE verifier in a new
// login-state cookie and redirects the browser to the IdP. rd is where the
// browser goes afterwards; it is sanitised again here. Before discovery has
// succeeded it waits up to DiscoveryWait, then gives ErrIdPUnavailable.
func (f *Flow) Start(w http.ResponseWriter, r *http.Request, rd string) error {
	p := f.waitProvider(r.Context())
	if p == nil {
		return ErrIdPUnavailable
	}
	if !f.used.hasRoom() {
		// The callback could not be accepted; say so before the IdP.
		return ErrBusy
	}
	redirectURL, ok := f.RedirectURL(r.Host)
	if !ok {
		return ErrUnknownHost
	}
	st := loginState{
		State:    rand.Text(),
		Nonce:    rand.Text(),
		Verifier: oauth2.GenerateVerifier(),
		Return:   redirect.SafePath(rd),
		Redirect: redirectURL.String(),
		Created:  f.cfg.Now().Unix(),
	}
	plain, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode login state: %w", err)
	}
	name := f.loginPrefix() + rand.Text()[:12]
	value, err := securecookie.EncodeMulti(name, plain, *f.codecs.Load()...)
	if err != nil {
		return fmt.Errorf("seal login state: %w", err)
	}
	f.dropOldLogins(w, r)
	http.SetCookie(w, f.cookie(name, value, int(LoginWindow/time.Second)))
	authURL := f.oauth2Config(p, redirectURL).AuthCodeURL(st.State,
		oidc.Nonce(st.Nonce),
		oauth2.S256ChallengeOption(st.Verifier), // RFC 7636 4.2
	)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, authURL, http.StatusFound)
	return nil
}

// dropOldLogins clears login cookies so that, with the one about to be set,
// at most MaxLogins remain: undecodable ones first, then the oldest.
func (f *Flow) dropOldLogins(w http.ResponseWriter, r *http.Request) {
	type entry struct {
		name    string
		created int64
	}
	var entries []entry
	for _, c := range r.Cookies() {
		if !f.IsLoginCookie(c.Name) {
			continue
		}
		created := int64(0) // undecodable: drop first
		if st, err := f.decodeLogin(c.Name, c.Value); err == nil {
			created = st.Created
		}
		entries = append(entries, entry{c.Name, created})
	}
	if len(entries) < MaxLogins {
		return
	}
	slices.SortFunc(entries, func(a, b entry) int { return int(a.created - b.created) })
	for _, e := range entries[:len(entries)-MaxLogins+1] {
		http.SetCookie(w, f.cookie(e.name, "", -1))
	}
}

func (f *Flow) decodeLogin(name, value string) (loginState, error) {
	var plain []byte
	var st loginState
	if err := securecookie.DecodeMulti(name, value, &plain, *f.codecs.Load()...); err != nil {
		return st, err
	}
	err := json.Unmarshal(plain, &st)
	return st, err
}

func (f *Flow) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: f.cfg.Secure, SameSite: http.SameSiteLaxMode,
	}
}

// ClearLoginCookies expires every login-state cookie the request carries.
func (f *Flow) ClearLoginCookies(w http.ResponseWriter, r *http.Request) {
	for _, c := range r.Cookies() {
		if f.IsLoginCookie(c.Name) {
			http.SetCookie(w, f.cookie(c.Name, "", -1))
		}
	}
}

// takeLogin finds the login-state cookie whose state equals the callback's
// state, clears it (single use), and checks that neither the state nor the
// login window has been used up.
func (f *Flow) takeLogin(w http.ResponseWriter, r *http.Request, state string) (loginState, error) {
	if state == "" {
		return loginState{}, fmt.Errorf("%w: no state parameter", ErrLoginState)
	}
	for _, c := range r.Cookies() {
		if !f.IsLoginCookie(c.Name) {
			continue
		}
		st, err := f.decodeLogin(c.Name, c.Value)
		if err != nil || subtle.ConstantTimeCompare([]byte(st.State), []byte(state)) != 1 {
			continue
		}
		http.SetCookie(w, f.cookie(c.Name, "", -1))
		created := time.Unix(st.Created, 0)
		if f.cfg.Now().Sub(created) > LoginWindow {
			return st, fmt.Errorf("%w: login started over %v ago", ErrLoginState, LoginWindow)
		}
		if err := f.markUsed(r.Context(), "state", st.State, created.Add(LoginWindow)); err != nil {
			if errors.Is(err, ErrUsed) {
				return st, fmt.Errorf("%w: state replayed: %w", ErrLoginState, err)
			}
			return st, err
		}
		return st, nil
	}
	return loginState{}, fmt.Errorf("%w: no login cookie matches the state", ErrLoginState)
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return string(sum[:])
}

// parseRedirect is used on values this package wrote itself.
func parseRedirect(s string) (*url.URL, error) { return url.Parse(s) }
