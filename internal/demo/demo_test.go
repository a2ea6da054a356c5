package demo

import (
	"slices"
	"testing"
)

func TestLocalArgs(t *testing.T) {
	t.Parallel()
	got := localArgs([]string{
		"--client-secret-file=/etc/gatehouse/client-secret",
		"--redirect-url=http://localhost/_gatehouse/callback",
		"--scopes=openid email",
		"--upstream=http://127.0.0.1:8080",
		"--issuer-url=http://127.0.0.1:5556/etc/gatehouse/x",
	}, map[string]string{
		"redirect-url":   "http://localhost:4180/_gatehouse/callback",
		"listen-address": "127.0.0.1:4180",
	}, "/etc/gatehouse", "/tmp/d")
	want := []string{
		"--client-secret-file=/tmp/d/client-secret",
		"--redirect-url=http://localhost:4180/_gatehouse/callback",
		"--scopes=openid email",
		"--upstream=http://127.0.0.1:8080",
		"--issuer-url=http://127.0.0.1:5556/etc/gatehouse/x",
		"--listen-address=127.0.0.1:4180",
	}
	if !slices.Equal(got, want) {
		t.Errorf("localArgs:\n got %q\nwant %q", got, want)
	}
}

func TestShellJoin(t *testing.T) {
	t.Parallel()
	got := shellJoin([]string{"proxy", "--scopes=openid email", "--x=it's"})
	want := "proxy \\\n      '--scopes=openid email' \\\n      '--x=it'\\''s'"
	if got != want {
		t.Errorf("shellJoin = %q, want %q", got, want)
	}
}
