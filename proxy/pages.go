package proxy

import (
	"encoding/json"
	"html"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// page is what the HTML template shows.
type page struct {
	Status    int
	Title     string
	Message   string
	Action    string // link target, empty for none
	ActionTxt string
	RequestID string
	Form      *form
}

// form is a single-button POST form (the logout confirmation).
type form struct {
	Action string
	Button string
}

// The page is assembled with html.EscapeString rather than html/template:
// the template package's reflection (MethodByName) keeps every exported
// method of every type in the binary, about 8 MB of the sidecar, and the
// page has only a handful of fields, all text or attribute values.
const (
	pageHead = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>`
	pageStyle = `</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f6f7f9;color:#1d2330;margin:0}
main{max-width:34rem;margin:12vh auto;padding:2rem 2.25rem;background:#fff;border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.08),0 8px 24px rgba(0,0,0,.06)}
h1{font-size:1.35rem;margin:0 0 .75rem}
p{line-height:1.5;margin:.5rem 0 1rem}
a.button,button{display:inline-block;background:#2f5bea;color:#fff;border:0;border-radius:8px;padding:.6rem 1.1rem;font-size:1rem;text-decoration:none;cursor:pointer}
small{color:#6b7385}
</style>
</head>
<body>
<main>
<h1>`
	pageTail = `</main>
</body>
</html>
`
)

// render returns p as an HTML document. Every value is escaped for HTML
// text or a quoted attribute; link and form targets are used only when they
// are paths on this site (one leading slash), as the proxy builds them.
func (p page) render() string {
	var b strings.Builder
	esc := html.EscapeString
	b.WriteString(pageHead)
	b.WriteString(esc(p.Title))
	b.WriteString(pageStyle)
	b.WriteString(esc(p.Title))
	b.WriteString("</h1>\n<p>")
	b.WriteString(esc(p.Message))
	b.WriteString("</p>\n")
	if p.Form != nil && sitePath(p.Form.Action) {
		b.WriteString(`<form method="post" action="` + esc(p.Form.Action) + `"><button type="submit">` + esc(p.Form.Button) + "</button></form>\n")
	}
	if p.Action != "" && sitePath(p.Action) {
		b.WriteString(`<p><a class="button" href="` + esc(p.Action) + `">` + esc(p.ActionTxt) + "</a></p>\n")
	}
	if p.RequestID != "" {
		b.WriteString("<p><small>Request ID " + esc(p.RequestID) + " &middot; HTTP " + strconv.Itoa(p.Status) + "</small></p>\n")
	}
	b.WriteString(pageTail)
	return b.String()
}

// sitePath reports whether target is a path on this site: one leading
// slash, then neither a slash nor a backslash.
func sitePath(target string) bool {
	return len(target) > 0 && target[0] == '/' && (len(target) == 1 || (target[1] != '/' && target[1] != '\\'))
}

// writePage renders p as HTML with status p.Status.
func writePage(w http.ResponseWriter, p page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.WriteHeader(p.Status)
	_, _ = io.WriteString(w, p.render())
}

// writeJSON writes v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// unauthenticatedBody is the exact 401 body of DESIGN.md behaviour 1.
var unauthenticatedBody = []byte(`{"error":"unauthenticated"}` + "\n")

func writeUnauthenticated(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(unauthenticatedBody)
}
