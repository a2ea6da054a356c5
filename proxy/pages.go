package proxy

import (
	"encoding/json"
	"html/template"
	"net/http"
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

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.Title}}</title>
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
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{if .Form}}<form method="post" action="{{.Form.Action}}"><button type="submit">{{.Form.Button}}</button></form>{{end}}
{{if .Action}}<p><a class="button" href="{{.Action}}">{{.ActionTxt}}</a></p>{{end}}
{{if .RequestID}}<p><small>Request ID {{.RequestID}} &middot; HTTP {{.Status}}</small></p>{{end}}
</main>
</body>
</html>
`))

// writePage renders p as HTML with status p.Status.
func writePage(w http.ResponseWriter, p page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.WriteHeader(p.Status)
	_ = pageTemplate.Execute(w, p)
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
