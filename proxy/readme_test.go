package proxy_test

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

var update = flag.Bool("update", false, "rewrite golden files and the README's generated sections")

const (
	flagsBegin = "<!-- BEGIN proxy-flags (generated: go test ./proxy -run TestREADMEFlags -update) -->"
	flagsEnd   = "<!-- END proxy-flags -->"
)

// flagReference renders the proxy's flags as a Markdown table.
func flagReference() string {
	c := proxy.DefaultConfig()
	fs := proxy.NewFlagSet(&c, io.Discard)
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n")
	fs.VisitAll(func(f *flag.Flag) {
		_, usage := flag.UnquoteUsage(f)
		def := f.DefValue
		switch def {
		case "", "[]":
			def = ""
		default:
			def = "`" + def + "`"
		}
		usage = strings.ReplaceAll(usage, "|", `\|`)
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", f.Name, proxy.EnvName(f.Name), def, usage)
	})
	return b.String()
}

// TestREADMEFlags fails when the README's flag reference and the code
// disagree.
func TestREADMEFlags(t *testing.T) {
	t.Parallel()
	const path = "../README.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, flagsBegin)
	end := strings.Index(readme, flagsEnd)
	if start < 0 || end < start {
		t.Fatalf("README lacks the %q ... %q markers", flagsBegin, flagsEnd)
	}
	want := flagReference()
	got := readme[start+len(flagsBegin)+1 : end]
	if got == want {
		return
	}
	if *update {
		readme = readme[:start+len(flagsBegin)+1] + want + readme[end:]
		if err := os.WriteFile(path, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README flag reference is stale; run: go test ./proxy -run TestREADMEFlags -update\n--- want\n%s\n--- got\n%s", want, got)
}
