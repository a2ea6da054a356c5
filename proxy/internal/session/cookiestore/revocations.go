package cookiestore

import (
	"sync"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// DefaultMaxRevocations bounds the in-memory revocation list.
const DefaultMaxRevocations = 10_000

// Revocations remembers back-channel logouts for stores that keep sessions
// in cookies: a session of a revoked sid or sub created at or before the
// revocation is refused. The list lives in memory, so it holds per replica
// and until restart; it is bounded, dropping the oldest entry when full.
type Revocations struct {
	now func() time.Time
	max int

	mu    sync.Mutex // guards the fields below
	bySID map[string]time.Time
	bySub map[string]time.Time
	order []key
}

type key struct {
	sid bool
	v   string
}

// NewRevocations returns an empty list holding at most limit entries (0 means
// DefaultMaxRevocations).
func NewRevocations(now func() time.Time, limit int) *Revocations {
	if limit <= 0 {
		limit = DefaultMaxRevocations
	}
	return &Revocations{now: now, max: limit, bySID: map[string]time.Time{}, bySub: map[string]time.Time{}}
}

// Add records that sessions of sid and/or sub created up to at are over.
func (r *Revocations) Add(sid, sub string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sid != "" {
		r.put(key{true, sid}, at)
	}
	if sub != "" {
		r.put(key{false, sub}, at)
	}
}

// put records k; r.mu is held.
func (r *Revocations) put(k key, at time.Time) {
	m := r.bySub
	if k.sid {
		m = r.bySID
	}
	if old, ok := m[k.v]; ok {
		if at.After(old) {
			m[k.v] = at
		}
		return
	}
	for len(r.order) >= r.max {
		oldest := r.order[0]
		r.order = r.order[1:]
		if oldest.sid {
			delete(r.bySID, oldest.v)
		} else {
			delete(r.bySub, oldest.v)
		}
	}
	m[k.v] = at
	r.order = append(r.order, k)
}

// Revoked reports whether s was created at or before a revocation of its
// sid or subject.
func (r *Revocations) Revoked(s *session.Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.order) == 0 {
		return false
	}
	if at, ok := r.bySID[s.SID]; ok && s.SID != "" && !s.CreatedAt.After(at) {
		return true
	}
	if at, ok := r.bySub[s.Identity.Subject]; ok && !s.CreatedAt.After(at) {
		return true
	}
	return false
}
