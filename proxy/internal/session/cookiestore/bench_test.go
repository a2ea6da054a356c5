package cookiestore_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/cookiestore"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/sessiontest"
)

// benchSession returns a store and a session with realistic tokens (RS256
// ID and access tokens, opaque refresh token) sealed by it.
func benchSession(b *testing.B) (*cookiestore.Store, *session.Session) {
	b.Helper()
	now := time.Now()
	codecs, err := cookiestore.Codecs([][]byte{[]byte(strings.Repeat("s", 40))}, 12*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	st := cookiestore.New(cookiestore.Options{Name: "gatehouse", Codecs: codecs, Now: func() time.Time { return now }})
	return st, sessiontest.RealisticSession(now)
}

// reportSize reports the sealed cookie against the tokens it holds, the
// ratio the design bounds at 1.4.
func reportSize(b *testing.B, sess *session.Session, cookieBytes int) {
	tokens := len(sess.IDToken) + len(sess.AccessToken) + len(sess.RefreshToken)
	b.ReportMetric(float64(cookieBytes), "cookie-B")
	b.ReportMetric(float64(tokens), "token-B")
	b.ReportMetric(float64(cookieBytes)/float64(tokens), "cookie/token")
}

// BenchmarkDecode is the cookie's share of every authenticated request:
// authenticate, decrypt, inflate and parse a reassembled value.
func BenchmarkDecode(b *testing.B) {
	st, sess := benchSession(b)
	value, err := st.Encode(sess)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Decode(value); err != nil {
			b.Fatal(err)
		}
	}
	reportSize(b, sess, len(value))
}

// BenchmarkLoad is Decode plus finding and joining the chunks in the
// request's Cookie header, as the proxy calls it.
func BenchmarkLoad(b *testing.B) {
	st, sess := benchSession(b)
	rec := httptest.NewRecorder()
	if err := st.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), sess); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	size := 0
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
		size += len(c.Value)
	}
	req.Header.Add("Cookie", "_ga=GA1.1.123456789.1700000000; theme=dark") // the app's own cookies
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Load(req); err != nil {
			b.Fatal(err)
		}
	}
	reportSize(b, sess, size)
}

// BenchmarkEncode is the sealing at login and refresh.
func BenchmarkEncode(b *testing.B) {
	st, sess := benchSession(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Encode(sess); err != nil {
			b.Fatal(err)
		}
	}
}
