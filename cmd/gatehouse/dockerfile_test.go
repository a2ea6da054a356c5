package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfileMatchesMakefile: the image is built with the same go build
// flags as make build (CI has no container engine, so it builds with the
// Makefile), both binaries, and the sidecar at the path the controller
// injects.
func TestDockerfileMatchesMakefile(t *testing.T) {
	t.Parallel()
	docker, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	flags := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	mk := regexp.MustCompile(`(?m)^GO_BUILD := (.*)$`).FindStringSubmatch(string(makefile))
	ld := regexp.MustCompile(`(?m)^LDFLAGS := (.*)$`).FindStringSubmatch(string(makefile))
	if mk == nil || ld == nil {
		t.Fatal("Makefile lacks GO_BUILD or LDFLAGS")
	}
	want := flags(strings.ReplaceAll(strings.ReplaceAll(mk[1], "$(LDFLAGS)", ld[1]), "$(VERSION)", "${VERSION}"))
	builds := regexp.MustCompile(`CGO_ENABLED=0 go build [^\n]*?(?: -o)`).FindAllString(string(docker), -1)
	if len(builds) != 2 {
		t.Fatalf("Dockerfile has %d go build commands, want 2 (gatehouse and gatehouse-sidecar)", len(builds))
	}
	for i, b := range builds {
		got := flags(strings.TrimSuffix(b, " -o"))
		got = strings.Replace(got, " -tags sidecar,nethttpomithttp2", "", 1)
		if got != want {
			t.Errorf("Dockerfile build %d: %q, Makefile: %q", i+1, got, want)
		}
	}
	// controllers.SidecarCommand is /usr/local/bin/gatehouse-sidecar.
	if !strings.Contains(string(makefile), "SIDECAR_TAGS := sidecar,nethttpomithttp2") {
		t.Error("the Makefile's SIDECAR_TAGS differ from the Dockerfile's -tags sidecar,nethttpomithttp2")
	}
	for _, s := range []string{"-tags sidecar,nethttpomithttp2 -o /out/gatehouse-sidecar", "COPY --from=build /out/gatehouse /out/gatehouse-sidecar /usr/local/bin/", "USER 65532:65532", "distroless/static"} {
		if !strings.Contains(string(docker), s) {
			t.Errorf("Dockerfile lacks %q", s)
		}
	}
}
