package proxy

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/authz"
)

// pollInterval backs up fsnotify: some volume types never send events, and
// a missed event must not leave an old policy in force for long.
const pollInterval = 5 * time.Second

// watchFile calls reload when the file at path changes, including
// Kubernetes' atomic symlink swap of mounted ConfigMaps and Secrets (the
// directory is watched, not the file, and the content is compared). reload
// keeps the last good state when the new content is bad.
func (s *Server) watchFile(ctx context.Context, path string, reload func(context.Context)) {
	last := fileDigest(path)
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Warn("Cannot watch the config file; polling it instead", "file", path, "error", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(path)); err != nil {
			s.log.Warn("Cannot watch the config file's directory; polling it instead", "file", path, "error", err)
		} else {
			events = w.Events
		}
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			// Let a burst of events (write, chmod, symlink swap) settle.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		case <-tick.C:
		}
		d := fileDigest(path)
		if d == last {
			continue
		}
		last = d
		reload(ctx)
	}
}

func (s *Server) reloadPolicy(ctx context.Context) {
	c, err := LoadPolicyFile(s.cfg.ConfigFile, s.cfg)
	var p *authz.Policy
	if err == nil {
		p, err = authz.New(c.PolicySpec())
	}
	if err != nil {
		s.metrics.policyReloads.WithLabelValues("failure").Inc()
		s.log.ErrorContext(ctx, "Config file rejected; keeping the last good policy", "file", s.cfg.ConfigFile, "error", err)
		return
	}
	s.policy.Store(p)
	s.metrics.policyReloads.WithLabelValues("success").Inc()
	s.log.InfoContext(ctx, "Policy reloaded", "file", s.cfg.ConfigFile,
		"allowedEmails", len(c.AllowedEmails), "allowedEmailDomains", len(c.AllowedEmailDomains),
		"allowedGroups", len(c.AllowedGroups), "skipAuthPaths", len(c.SkipAuthPaths))
}

// fileDigest hashes the file's content; a missing file hashes as empty.
func fileDigest(path string) [32]byte {
	b, _ := os.ReadFile(path)
	return sha256.Sum256(b)
}
