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

// metricsReference renders the sidecar's metrics as a Markdown table.
func metricsReference() string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n")
	for _, m := range proxy.Metrics() {
		labels := ""
		if len(m.Labels) > 0 {
			labels = "`" + strings.Join(m.Labels, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.Name, m.Type, labels, strings.ReplaceAll(m.Help, "|", `\|`))
	}
	return b.String()
}

// TestREADMEFlags fails when the README's flag reference and the code
// disagree. Not parallel: with -update it rewrites the README, as
// TestREADMEMetrics does.
func TestREADMEFlags(t *testing.T) {
	checkREADME(t, "proxy-flags", "TestREADMEFlags", flagReference())
}

// TestREADMEMetrics fails when the README's list of the sidecar's metrics
// and the code that writes them disagree.
func TestREADMEMetrics(t *testing.T) {
	checkREADME(t, "proxy-metrics", "TestREADMEMetrics", metricsReference())
}

// checkREADME compares the README's generated section name with want, or
// with -update rewrites it.
func checkREADME(t *testing.T, name, test, want string) {
	t.Helper()
	const path = "../README.md"
	begin := "<!-- BEGIN " + name + " (generated: go test ./proxy -run " + test + " -update) -->"
	end := "<!-- END " + name + " -->"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatalf("README lacks the %q ... %q markers", begin, end)
	}
	got := readme[i+len(begin)+1 : j]
	if got == want {
		return
	}
	if *update {
		readme = readme[:i+len(begin)+1] + want + readme[j:]
		if err := os.WriteFile(path, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README %s reference is stale; run: go test ./proxy -run %s -update\n--- want\n%s\n--- got\n%s", name, test, want, got)
}
