package controllers

import (
	"encoding/json"
	"fmt"
	"slices"
)

// BrokerRedirects is one namespace's entry in the broker registry, the
// ConfigMap in Gatehouse's namespace that the controller keeps and
// gatehouse broker reads: for each provider in broker mode, the callback
// URLs the controller rendered for the namespace's front doors. The broker
// exchanges a code for a namespace only with one of these as redirect_uri,
// so a tenant cannot have the shared client's tokens sent to a host that
// belongs to another namespace. The ConfigMap's keys are namespace names,
// each value the JSON of a BrokerRedirects.
type BrokerRedirects map[string][]string

// DefaultBrokerRegistry is the registry ConfigMap's name when none is
// given.
const DefaultBrokerRegistry = "gatehouse-broker-registry"

// DefaultBrokerAudience is the audience of the projected ServiceAccount
// tokens with which sidecars authenticate to the broker.
const DefaultBrokerAudience = "gatehouse-broker"

// ParseBrokerRedirects reads one namespace's registry entry.
func ParseBrokerRedirects(s string) (BrokerRedirects, error) {
	var r BrokerRedirects
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return nil, fmt.Errorf("broker registry entry: %w", err)
	}
	return r, nil
}

// Allows reports whether redirectURI is registered, exactly, for provider.
func (r BrokerRedirects) Allows(provider, redirectURI string) bool {
	return slices.Contains(r[provider], redirectURI)
}

// String renders the entry as the ConfigMap holds it, with sorted lists so
// that an unchanged registry is never rewritten.
func (r BrokerRedirects) String() string {
	out := make(BrokerRedirects, len(r))
	for p, urls := range r {
		urls = slices.Clone(urls)
		slices.Sort(urls)
		out[p] = slices.Compact(urls)
	}
	b, _ := json.Marshal(out)
	return string(b)
}
