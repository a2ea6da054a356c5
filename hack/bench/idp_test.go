package main

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSessionFrom(t *testing.T) {
	t.Parallel()
	got, err := sessionFromHeader(t, []string{
		"gatehouse-login-abc=; Max-Age=0",
		"gatehouse=AAAA; Max-Age=3600",
		"gatehouse-1=BB; Max-Age=3600",
		"gatehouse-x=CC; Max-Age=3600",
		"other=DDDD",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := sessionCookie{header: "gatehouse=AAAA; gatehouse-1=BB", valueBytes: 6, chunks: 2}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(sessionCookie{})); diff != "" {
		t.Errorf("sessionFrom (-want +got):\n%s", diff)
	}
}

func sessionFromHeader(t *testing.T, lines []string) (sessionCookie, error) {
	t.Helper()
	var cookies []*http.Cookie
	for _, l := range lines {
		c, err := http.ParseSetCookie(l)
		if err != nil {
			t.Fatal(err)
		}
		cookies = append(cookies, c)
	}
	return sessionFrom(cookies, "gatehouse")
}
