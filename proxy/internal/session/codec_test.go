package session_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/sessiontest"
)

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		s    *session.Session
	}{
		{"sample", sessiontest.Sample(now, "ann")},
		{"realistic", sessiontest.RealisticSession(now)},
		{"empty tokens", &session.Session{CreatedAt: now, ExpiresAt: now.Add(time.Hour)}},
		{"odd tokens", &session.Session{IDToken: "a.b==.c", AccessToken: "x..y", RefreshToken: "🙂", CreatedAt: now, ExpiresAt: now}},
		{"unverified email", &session.Session{Identity: sessiontest.Sample(now, "x").Identity, CreatedAt: now, ExpiresAt: now}},
	}
	tests[4].s.Identity.EmailVerified = false
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := session.Marshal(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			got, err := session.Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.s, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzUnmarshal feeds arbitrary plaintext to the decoder (the bytes behind
// the cookie's authentication): it must not panic, must fail with
// ErrNotFound, and whatever it accepts must survive a second round trip.
func FuzzUnmarshal(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	good, err := session.Marshal(sessiontest.Sample(now, "ann"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := session.Unmarshal(b)
		if err != nil {
			if !errors.Is(err, session.ErrNotFound) {
				t.Fatalf("error %v is not ErrNotFound", err)
			}
			return
		}
		again, err := session.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := session.Unmarshal(again)
		if err != nil {
			t.Fatalf("re-encoded session does not decode: %v", err)
		}
		if diff := cmp.Diff(s, s2); diff != "" {
			t.Fatalf("second round trip differs:\n%s", diff)
		}
	})
}
