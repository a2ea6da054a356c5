package redisstore_test

import (
	"errors"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/sessiontest"
)

// BenchmarkLoad is the store's share of every authenticated request with
// a realistic session, against a real redis-server on loopback: one round
// trip without the client-side cache, none on a cache hit.
func BenchmarkLoad(b *testing.B) {
	srv := redistest.Start(b)
	for _, cache := range []bool{false, true} {
		b.Run(cacheName(cache), func(b *testing.B) {
			clock := sessiontest.NewClock()
			st := newStoreWith(b, srv.URL(), clock, "secret-a", cache)
			req := sessiontest.Save(b, st, nil, sessiontest.RealisticSession(clock.Now()))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := st.Load(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLogoutPropagation measures how long a logout on replica a takes
// to reach replica b, which serves the session from its client-side
// cache: from the start of a's Delete until b first refuses the session
// (b polls without pause). It reports the median, the 99th percentile and the
// worst of the iterations.
func BenchmarkLogoutPropagation(b *testing.B) {
	srv := redistest.Start(b)
	clock := sessiontest.NewClock()
	a := newStoreWith(b, srv.URL(), clock, "secret-a", true)
	r := newStoreWith(b, srv.URL(), clock, "secret-a", true)
	var took []time.Duration
	sample := sessiontest.RealisticSession(clock.Now())
	for b.Loop() {
		b.StopTimer()
		sess := *sample // a new session each time: Save sets Ref
		req := sessiontest.Save(b, a, nil, &sess)
		for range 2 {
			if _, err := r.Load(req); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		if err := a.Delete(httptest.NewRecorder(), req); err != nil {
			b.Fatal(err)
		}
		for {
			_, err := r.Load(req)
			if errors.Is(err, session.ErrNotFound) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if time.Since(start) > 10*time.Second {
				b.Fatal("the logout did not reach the other replica within 10s")
			}
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}
