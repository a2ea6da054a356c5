package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/oidcflow"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// Refresh timing.
const (
	// refreshRetry is how long a failed refresh (IdP down or failing)
	// waits before the session tries again.
	refreshRetry = 30 * time.Second
	// refreshGrace is how long the result of a refresh is handed to
	// requests that still carry the old refresh token (cookie store,
	// concurrent requests), so a rotating refresh token is never used twice.
	refreshGrace = 30 * time.Second
	// refreshLockTTL bounds the cross-replica refresh lock; it outlasts
	// the refresh request's own 15s timeout.
	refreshLockTTL = 20 * time.Second
	// maxRefreshMemo bounds the grace and retry maps.
	maxRefreshMemo = 10_000
)

// errSessionEnded: the IdP refused the refresh; the session is over.
var errSessionEnded = errors.New("session ended: the identity provider refused the refresh")

// locker is implemented by stores that can lock a session across replicas
// (the Redis store).
type locker interface {
	Lock(ctx context.Context, s *session.Session, ttl time.Duration) (unlock func(), ok bool, err error)
	// Reload returns the shared record as it is now.
	Reload(ctx context.Context, s *session.Session) (*session.Session, error)
}

// refreshResult is what one refresh gives every request that waited on it.
type refreshResult struct {
	next *session.Session // nil: keep the request's own session
	save bool             // the caller must save next (with its own cookie)
}

// refresher refreshes each session's tokens once, however many requests
// ask at the same time: single flight within the replica, a Redis lock
// across replicas.
type refresher struct {
	flow  *oidcflow.Flow
	now   func() time.Time
	group singleflight.Group

	mu    sync.Mutex // guards grace and retry
	grace map[[32]byte]graceEntry
	retry map[[32]byte]time.Time
}

type graceEntry struct {
	next    *session.Session
	expires time.Time
}

func newRefresher(flow *oidcflow.Flow, now func() time.Time) *refresher {
	return &refresher{flow: flow, now: now, grace: map[[32]byte]graceEntry{}, retry: map[[32]byte]time.Time{}}
}

// maybeRefresh refreshes sess when its access token is due and saves the
// result. It returns the session to use, or errSessionEnded when the IdP
// refused the refresh. IdP outages keep the session (DESIGN.md behaviour 7
// and 11).
func (s *Server) maybeRefresh(w http.ResponseWriter, r *http.Request, sess *session.Session) (*session.Session, error) {
	now := s.now()
	if !oidcflow.RefreshDue(sess, now) {
		return sess, nil
	}
	rf := s.refresher
	key := sha256.Sum256([]byte(sess.RefreshToken))
	rf.mu.Lock()
	if g, ok := rf.grace[key]; ok && now.Before(g.expires) {
		rf.mu.Unlock()
		next := *g.next
		next.Ref = sess.Ref
		return s.saveRefreshed(w, r, &next)
	}
	if until, ok := rf.retry[key]; ok && now.Before(until) {
		rf.mu.Unlock()
		return sess, nil
	}
	rf.mu.Unlock()

	v, err, _ := rf.group.Do(string(key[:]), func() (any, error) {
		l, shared := s.store.(locker)
		if shared {
			unlock, got, err := l.Lock(r.Context(), sess, refreshLockTTL)
			if err != nil {
				return nil, err
			}
			if !got {
				// Another replica is refreshing; its result reaches the
				// shared record, and this token is still usable.
				return refreshResult{}, nil
			}
			defer unlock()
			// Double-check under the lock: another replica may have
			// refreshed since this request loaded the record.
			fresh, err := l.Reload(r.Context(), sess)
			if err != nil {
				return nil, err
			}
			if fresh.RefreshToken != sess.RefreshToken || !oidcflow.RefreshDue(fresh, rf.now()) {
				return refreshResult{next: fresh}, nil
			}
		}
		next, err := rf.flow.Refresh(context.WithoutCancel(r.Context()), sess)
		if err != nil {
			return nil, err
		}
		rf.remember(key, next)
		if shared {
			// Save under the lock, so the next holder sees the rotated
			// refresh token. The cookie (same reference) does not change.
			saved := *next
			saved.Ref = sess.Ref
			if _, err := s.saveRefreshed(w, r, &saved); err != nil {
				return nil, err
			}
			return refreshResult{next: &saved}, nil
		}
		return refreshResult{next: next, save: true}, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, oidcflow.ErrLoginRefused):
		s.log.InfoContext(r.Context(), "Session ended: refresh refused", "sub", sess.Identity.Subject, "error", err)
		return nil, errSessionEnded
	case errors.Is(err, session.ErrUnavailable):
		return nil, err
	default:
		rf.backoff(key)
		s.log.WarnContext(r.Context(), "Token refresh failed; keeping the session and retrying later", "sub", sess.Identity.Subject, "retryIn", refreshRetry.String(), "error", err)
		return sess, nil
	}
	res, _ := v.(refreshResult)
	if res.next == nil {
		return sess, nil
	}
	copied := *res.next
	copied.Ref = sess.Ref
	if !res.save {
		return &copied, nil
	}
	return s.saveRefreshed(w, r, &copied)
}

func (s *Server) saveRefreshed(w http.ResponseWriter, r *http.Request, next *session.Session) (*session.Session, error) {
	if err := s.store.Save(w, r, next); err != nil {
		return nil, err
	}
	s.metrics.refreshes.Inc()
	return next, nil
}

func (rf *refresher) remember(key [32]byte, next *session.Session) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if len(rf.grace) >= maxRefreshMemo {
		clear(rf.grace)
	}
	kept := *next // never shared with a caller that might modify it
	rf.grace[key] = graceEntry{next: &kept, expires: rf.now().Add(refreshGrace)}
	delete(rf.retry, key)
}

func (rf *refresher) backoff(key [32]byte) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if len(rf.retry) >= maxRefreshMemo {
		clear(rf.retry)
	}
	rf.retry[key] = rf.now().Add(refreshRetry)
}
