package idp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// LoginTitle is the title of the IdP's login page and LoginError the message
// it shows after a wrong login or password.
const (
	LoginTitle = "Sign in to the Gatehouse demo IdP"
	LoginError = "Invalid login or password."
)

// maxRedirects bounds the redirects followed by Login and Logout; a sign-in
// through the proxy takes about five.
const maxRedirects = 20

// maxPage bounds how much of an HTML page is read to look for a form.
const maxPage = 1 << 20

// Login signs in like a browser. It GETs startURL (typically a protected
// page of the proxy) with client, which must have a cookie jar, following
// redirects to the IdP's login page; it then posts user and password in the
// page's form and follows the redirects to the end (normally back to the
// proxy), returning the final response, whose body the caller must close.
//
// Wrong credentials are not an error: the IdP answers 401 with the login
// page again, showing LoginError, and that response is returned. When the
// IdP already has a session no login page shows up, and the response that
// ends the redirects from startURL is returned as is.
//
// Requests send "Accept: text/html". Redirects are followed whatever
// client.CheckRedirect says.
func Login(client *http.Client, startURL, user, password string) (*http.Response, error) {
	c, err := browser(client)
	if err != nil {
		return nil, err
	}
	resp, err := get(c, startURL)
	if err != nil {
		return nil, err
	}
	f, err := findForm(resp, func(f *form) bool { _, ok := f.fields["password"]; return ok })
	if err != nil || f == nil {
		return resp, err
	}
	f.fields.Set("login", user)
	f.fields.Set("password", password)
	return post(c, f)
}

// Logout follows startURL (for example the proxy's sign-out URL, or the
// IdP's end_session_endpoint) like a browser, and confirms the sign-out on
// the IdP's page: its "Yes, sign me out" form, or the self-submitting form
// the IdP shows when it has no session. It returns the final response, whose
// body the caller must close. When no such form shows up, the response that
// ends the redirects from startURL is returned as is.
func Logout(client *http.Client, startURL string) (*http.Response, error) {
	c, err := browser(client)
	if err != nil {
		return nil, err
	}
	resp, err := get(c, startURL)
	if err != nil {
		return nil, err
	}
	f, err := findForm(resp, func(f *form) bool { return strings.HasSuffix(f.action.Path, "/session/end/confirm") })
	if err != nil || f == nil {
		return resp, err
	}
	f.fields.Set("logout", "yes")
	return post(c, f)
}

// browser returns a copy of client that follows redirects.
func browser(client *http.Client) (*http.Client, error) {
	if client == nil || client.Jar == nil {
		return nil, errors.New("idp: the http.Client needs a cookie jar")
	}
	c := *client
	c.CheckRedirect = func(_ *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("idp: stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	return &c, nil
}

func get(c *http.Client, rawURL string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/html")
	return c.Do(req)
}

func post(c *http.Client, f *form) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, f.action.String(), strings.NewReader(f.fields.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	return c.Do(req)
}

// form is an HTML form: its absolute action URL and the values it submits.
type form struct {
	action *url.URL
	fields url.Values
}

// findForm looks in the HTML body of resp for the first POST form that
// match accepts. It returns nil without error when there is none; resp.Body
// is then replaced so that the caller can still read it, and closed
// otherwise.
func findForm(resp *http.Response, match func(*form) bool) (*form, error) {
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPage))
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("idp: reading %s: %w", resp.Request.URL, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("idp: parsing %s: %w", resp.Request.URL, err)
	}
	for _, n := range elements(doc, "form") {
		if !strings.EqualFold(attr(n, "method"), http.MethodPost) {
			continue
		}
		action, err := resp.Request.URL.Parse(attr(n, "action"))
		if err != nil {
			continue
		}
		f := &form{action: action, fields: url.Values{}}
		for _, in := range elements(n, "input") {
			if name := attr(in, "name"); name != "" {
				f.fields.Set(name, attr(in, "value"))
			}
		}
		if match(f) {
			_ = resp.Body.Close()
			return f, nil
		}
	}
	return nil, nil
}

// elements returns the descendants of n named tag, in document order.
func elements(n *html.Node, tag string) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && d.Data == tag {
			out = append(out, d)
		}
	}
	return out
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}
