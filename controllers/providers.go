package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// providerCheckInterval is how often discovery documents are re-read.
const providerCheckInterval = 5 * time.Minute

// providerChecker reads each provider's OIDC discovery document at start
// and then periodically, and reports broken ones in logs, metrics and the
// readiness detail. It never makes the controller unready: Pods must stay
// admissible while an IdP is down.
type providerChecker struct {
	file    *FileConfig
	client  *http.Client
	metrics *metrics
	log     logr.Logger

	mu     sync.Mutex // guards broken
	broken map[string]string
}

// NeedLeaderElection is false: every replica reports its own view.
func (c *providerChecker) NeedLeaderElection() bool { return false }

// Start runs the checks until ctx ends.
func (c *providerChecker) Start(ctx context.Context) error {
	t := time.NewTicker(providerCheckInterval)
	defer t.Stop()
	for {
		c.checkAll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *providerChecker) checkAll(ctx context.Context) {
	broken := map[string]string{}
	for _, p := range c.file.Providers {
		if err := c.check(ctx, p.IssuerURL); err != nil {
			broken[p.Name] = err.Error()
			c.metrics.providerOK.WithLabelValues(p.Name).Set(0)
			c.log.Error(err, "Provider discovery failed; new logins through it will fail", "provider", p.Name, "issuer", p.IssuerURL)
			continue
		}
		c.metrics.providerOK.WithLabelValues(p.Name).Set(1)
	}
	c.mu.Lock()
	c.broken = broken
	c.mu.Unlock()
}

func (c *providerChecker) check(ctx context.Context, issuer string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: HTTP %d", url, resp.StatusCode)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	if doc.Issuer != issuer {
		return fmt.Errorf("discovery document names issuer %q, want %q", doc.Issuer, issuer)
	}
	return nil
}

// serveStatus answers /providers on the metrics address: each provider
// and whether its discovery document was read at the last check. The
// controller stays ready while a provider is broken, so that Pods stay
// admissible; this is where to see why logins fail.
func (c *providerChecker) serveStatus(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	status := map[string]string{}
	for _, p := range c.file.Providers {
		status[p.Name] = "ok"
		if msg, ok := c.broken[p.Name]; ok {
			status[p.Name] = msg
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(status)
}
