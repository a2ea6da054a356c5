package redisstore_test

import (
	"log/slog"
	"os"
	"testing"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/redisstore"
)

func TestMain(m *testing.M) {
	// Dial failures are expected in the outage tests; the store reports
	// them as errors, so go-redis's own lines are noise here.
	redisstore.SetLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
