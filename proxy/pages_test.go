package proxy

import (
	"strings"
	"testing"
)

func TestPageEscapes(t *testing.T) {
	t.Parallel()
	out := page{
		Status: 403, Title: `<script>alert(1)</script>`, Message: `"quoted" & 'single'`,
		Action: `/_gatehouse/start?rd=%2Fa"><x`, ActionTxt: "Start <again>", RequestID: "id<1>",
		Form: &form{Action: "/_gatehouse/logout", Button: "Sign <out>"},
	}.render()
	for _, bad := range []string{"<script>", `"><x`, "<again>", "<out>", "id<1>", `"quoted"`} {
		if strings.Contains(out, bad) {
			t.Errorf("page contains %q unescaped:\n%s", bad, out)
		}
	}
	for _, want := range []string{
		`<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>`,
		`href="/_gatehouse/start?rd=%2Fa&#34;&gt;&lt;x"`,
		`<form method="post" action="/_gatehouse/logout">`,
		"HTTP 403",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q:\n%s", want, out)
		}
	}
}

func TestPageDropsForeignTargets(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"//evil.example/", `/\evil.example`, "https://evil.example/", "javascript:alert(1)", ""} {
		out := page{Status: 400, Title: "t", Action: target, ActionTxt: "go", Form: &form{Action: target, Button: "b"}}.render()
		if strings.Contains(out, "href=") || strings.Contains(out, "<form") {
			t.Errorf("target %q rendered:\n%s", target, out)
		}
	}
}
