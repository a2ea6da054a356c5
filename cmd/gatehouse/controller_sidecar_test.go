//go:build sidecar

package main

import (
	"bytes"
	"testing"
)

func TestSidecarBuildHasNoController(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run(t.Context(), []string{"controller"}, func(string) (string, bool) { return "", false }, &out, &out)
	if exitCode(err) != 2 {
		t.Fatalf("controller in the sidecar build: %v", err)
	}
}
