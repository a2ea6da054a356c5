package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// bodyReadTimeout bounds the wait for each read of a request body, like
// nginx's client_body_timeout: a client that stops sending half-way loses
// the request (408) instead of holding a connection to the proxy and to the
// app for ever. ReadHeaderTimeout covers the headers; http.Server's
// ReadTimeout is not used, since it would cut slow but steady uploads and
// WebSockets.
const bodyReadTimeout = 60 * time.Second

// errBodyTimeout: the client sent nothing of its request body for
// bodyReadTimeout. 408.
var errBodyTimeout = errors.New("request body read timed out")

// limitBodyReads makes every read of r's body wait at most s's body read
// timeout, and returns the request to serve. Requests without a body, the
// common case, are returned as they are.
func (s *Server) limitBodyReads(w http.ResponseWriter, r *http.Request) *http.Request {
	if r.Body == nil || r.Body == http.NoBody {
		return r
	}
	b := &timedBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: s.bodyReadTimeout}
	r = r.WithContext(context.WithValue(r.Context(), timedBodyKey{}, b))
	r.Body = b
	return r
}

// timedBodyKey finds the timedBody in the context of the reverse proxy's
// outbound request, whose body is a wrapper of it.
type timedBodyKey struct{}

// timedBody sets the connection's read deadline before each read of the
// body and clears it once the body is done, so that the deadline never
// outlives the body (the server's own background read would otherwise hit
// it and cancel a slow upstream response).
type timedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	// deadline is that of the read in progress (Unix nanoseconds), 0
	// between reads; timedOut is set when a read timed out.
	deadline atomic.Int64
	timedOut atomic.Bool
}

// bodyTimedOut reports whether a read of r's body timed out, or is past
// its deadline. The server cancels the request's context as the read
// fails, so the reverse proxy may report context.Canceled before the read
// has even returned.
func bodyTimedOut(r *http.Request) bool {
	b, ok := r.Context().Value(timedBodyKey{}).(*timedBody)
	if !ok {
		return false
	}
	d := b.deadline.Load()
	return b.timedOut.Load() || (d != 0 && time.Now().UnixNano() >= d)
}

func (b *timedBody) Read(p []byte) (int, error) {
	deadline := time.Now().Add(b.timeout)
	b.deadline.Store(deadline.UnixNano())
	_ = b.rc.SetReadDeadline(deadline)
	n, err := b.ReadCloser.Read(p)
	b.deadline.Store(0)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.timedOut.Store(true)
		// Closed, the server gives up on the rest of the body and
		// answers at once, instead of reading it before the response.
		_ = b.Close()
		err = fmt.Errorf("%w: %w", errBodyTimeout, err)
	default:
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
