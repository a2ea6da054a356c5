//go:build sidecar

package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSidecarBuildHasNoBroker(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run(t.Context(), []string{"broker"}, func(string) (string, bool) { return "", false }, &out, &out)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "sidecar build") {
		t.Fatalf("broker in the sidecar build: %v", err)
	}
}
