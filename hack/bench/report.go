package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// report is one run's results, printed as text or Markdown.
type report struct {
	setup   string
	results []result // plain, session, redirect, Redis, Redis without client cache
	cookie  sessionCookie
	tokens  tokenSizes
	prop    propagation
}

// Targets from the performance issue.
const (
	targetThroughput  = 0.9      // session req/s over plain's, at least
	targetP99         = 1.25     // session p99 over plain's, at most
	targetConnsPer1k  = 1.0      // new upstream connections per 1,000 requests, below
	targetIdleRSSKiB  = 12 << 10 // Gatehouse after start and one login, at most
	targetIdleAnonKiB = 3 << 10  // its anonymous part, at most
	targetPeakRSSKiB  = 24 << 10 // any Gatehouse configuration under the load, at most
	targetStartup     = 50 * time.Millisecond
	targetCookie      = 1.4 // session cookie bytes over token bytes, at most
	// The Redis store (with its client-side cache) against the cookie store.
	targetRedisThroughput = 0.9
	targetRedisAddedP99   = 2 * time.Millisecond
	// A logout on one replica refused by another, at most.
	targetPropagation = 100 * time.Millisecond
)

// table is the measurements: a header row, then one row a measure.
func (r report) table() [][]string {
	rows := [][]string{{""}}
	for _, res := range r.results {
		rows[0] = append(rows[0], res.name)
	}
	add := func(label string, cell func(result) string) {
		row := []string{label}
		for _, res := range r.results {
			row = append(row, cell(res))
		}
		rows = append(rows, row)
	}
	add("requests/s", func(x result) string { return rps(x) })
	add("latency p50", func(x result) string { return millis(x.wrk.P50) })
	add("latency p99", func(x result) string { return millis(x.wrk.P99) })
	add("proxy CPU s per 10k requests", func(x result) string { return strconv.FormatFloat(x.cpuPer10k(), 'f', 3, 64) })
	add("new upstream conns per 1k requests ⁴", func(x result) string {
		if !x.upstream {
			return "n/a"
		}
		return strconv.FormatFloat(x.connsPer1k(), 'f', 2, 64)
	})
	add("RSS idle ¹", func(x result) string { return mib(x.rssIdleKiB) })
	add("RSS idle, anonymous (RssAnon)", func(x result) string { return mib(x.rssAnonKiB) })
	add("RSS peak (VmHWM)", func(x result) string { return mib(x.rssPeakKiB) })
	add("start to first proxied 200 ²", func(x result) string {
		if x.startup == 0 {
			return "n/a"
		}
		return millis(x.startup)
	})
	add("requests (errors ³)", func(x result) string {
		return fmt.Sprintf("%s (%d)", thousands(x.wrk.Requests), x.wrk.SocketErrors+x.wrk.BadStatus)
	})
	return rows
}

// notes explain the marked rows.
func (r report) notes() []string {
	return []string{
		"¹ VmRSS of the proxy process before the load: plain after one request; gatehouse, session after start and one login; gatehouse, no session after start and one proxied request. What is not anonymous is the binary's pages mapped from the page cache (RssFile).",
		"² From fork/exec to the first 200 through the proxy, polling every 1 ms. For Gatehouse, a fresh process with the IdP already up, using the cookie the previous process minted; that process then served the no-session load.",
		"³ wrk socket errors plus responses that were neither 2xx nor 3xx.",
		"⁴ Counted from 1 s into the load (a fifth of shorter loads) to its end, against the requests the upstream served in that span: the end of the warm-up drops the upstream connections that had requests in flight, and the first moments of the load dial them again.",
		"⁵ Two more Gatehouse processes with the Redis store and its client-side cache on the same Redis: log in on a, have b serve the session twice (it is then in b's cache), POST the logout to a, and time from sending that POST until b first answers 401, polling b without pause. The logout's own round trip (delete in Redis, revoke, response) is included.",
		fmt.Sprintf("Session cookie: %s B of values in %d cookie(s); the tokens it holds: ID token %s B + access token %s B + refresh token %s B = %s B (fake IdP).",
			thousands(int64(r.cookie.valueBytes)), r.cookie.chunks, thousands(int64(r.tokens.id)),
			thousands(int64(r.tokens.access)), thousands(int64(r.tokens.refresh)), thousands(int64(r.tokens.total()))),
	}
}

// targets compares the run with the targets: target, measured,
// verdict.
func (r report) targets() [][]string {
	plain, session := r.results[0], r.results[1]
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	tp := session.wrk.RPS / plain.wrk.RPS
	p99 := float64(session.wrk.P99) / float64(plain.wrk.P99)
	cookie := float64(r.cookie.valueBytes) / float64(r.tokens.total())
	rows := [][]string{
		{"target (session unless said)", "measured", ""},
		{fmt.Sprintf("throughput >= %.2fx plain", targetThroughput),
			fmt.Sprintf("%.2fx (%s vs %s req/s)", tp, rps(session), rps(plain)),
			verdict(tp >= targetThroughput)},
		{fmt.Sprintf("p99 <= %.2fx plain", targetP99),
			fmt.Sprintf("%.2fx (%s vs %s)", p99, millis(session.wrk.P99), millis(plain.wrk.P99)),
			verdict(p99 <= targetP99)},
		{"new upstream conns < 1 per 1k requests",
			fmt.Sprintf("%.2f (%d over %s requests)", session.connsPer1k(), session.newConns, thousands(session.upstreamReq)),
			verdict(session.connsPer1k() < targetConnsPer1k)},
		{fmt.Sprintf("idle RSS <= %d MiB", targetIdleRSSKiB>>10),
			mib(session.rssIdleKiB),
			verdict(session.rssIdleKiB <= targetIdleRSSKiB)},
		{fmt.Sprintf("idle RSS anonymous <= %d MiB", targetIdleAnonKiB>>10),
			mib(session.rssAnonKiB),
			verdict(session.rssAnonKiB <= targetIdleAnonKiB)},
		r.peakRow(),
		{fmt.Sprintf("start to first proxied 200 <= %d ms", targetStartup.Milliseconds()),
			millis(session.startup),
			verdict(session.startup <= targetStartup)},
		{fmt.Sprintf("session cookie <= %.1fx its tokens", targetCookie),
			fmt.Sprintf("%.2fx (%s B vs %s B)", cookie, thousands(int64(r.cookie.valueBytes)), thousands(int64(r.tokens.total()))),
			verdict(cookie <= targetCookie)},
	}
	if len(r.results) > 3 {
		redis := r.results[3]
		rtp := redis.wrk.RPS / session.wrk.RPS
		added := redis.wrk.P99 - session.wrk.P99
		rows = append(rows,
			[]string{fmt.Sprintf("Redis store throughput >= %.2fx cookie store", targetRedisThroughput),
				fmt.Sprintf("%.2fx (%s vs %s req/s)", rtp, rps(redis), rps(session)),
				verdict(rtp >= targetRedisThroughput)},
			[]string{fmt.Sprintf("Redis store p99 added <= %d ms", targetRedisAddedP99.Milliseconds()),
				fmt.Sprintf("%s (%s vs %s)", millis(max(added, 0)), millis(redis.wrk.P99), millis(session.wrk.P99)),
				verdict(added <= targetRedisAddedP99)})
	}
	if len(r.results) > 4 {
		uncached := r.results[4]
		rows = append(rows, []string{"Redis store without client cache, for reference",
			fmt.Sprintf("%.2fx cookie store (%s req/s), p99 %s", uncached.wrk.RPS/session.wrk.RPS, rps(uncached), millis(uncached.wrk.P99)),
			""})
	}
	if len(r.prop.took) > 0 {
		p50, worst := r.prop.percentile(0.5), r.prop.took[len(r.prop.took)-1]
		rows = append(rows, []string{fmt.Sprintf("logout on replica a refused by replica b <= %d ms ⁵", targetPropagation.Milliseconds()),
			fmt.Sprintf("p50 %s, max %s (%d logouts)", millis(p50), millis(worst), len(r.prop.took)),
			verdict(worst <= targetPropagation)})
	}
	return rows
}

// peakRow checks the peak RSS of every Gatehouse configuration under load.
func (r report) peakRow() []string {
	var worst result
	for _, x := range r.results[1:] {
		if x.rssPeakKiB > worst.rssPeakKiB {
			worst = x
		}
	}
	ok := "ok"
	if worst.rssPeakKiB > targetPeakRSSKiB {
		ok = "MISSED"
	}
	return []string{fmt.Sprintf("peak RSS under load <= %d MiB (any gatehouse)", targetPeakRSSKiB>>10),
		fmt.Sprintf("%s (%s)", mib(worst.rssPeakKiB), worst.name), ok}
}

// writeText prints the report as aligned columns.
func (r report) writeText(w io.Writer) {
	fmt.Fprintf(w, "%s\n\n", r.setup)
	printTable(w, r.table(), true)
	fmt.Fprintln(w)
	printTable(w, r.targets(), false)
	fmt.Fprintln(w)
	for _, n := range r.notes() {
		fmt.Fprintln(w, n)
	}
}

func printTable(w io.Writer, rows [][]string, alignRight bool) {
	const gap = 3
	flags := uint(0)
	if alignRight {
		flags = tabwriter.AlignRight
	}
	var buf strings.Builder
	tw := tabwriter.NewWriter(&buf, 0, 0, gap, ' ', flags)
	for _, row := range rows {
		cells := row
		if alignRight {
			// Right-align the numbers but keep the labels on the left.
			cells = append([]string{padRight(row[0], longest(rows))}, row[1:]...)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	_ = tw.Flush()
	for line := range strings.Lines(buf.String()) {
		if alignRight {
			line = line[gap:] // the padding right alignment put before the labels
		}
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
}

func longest(rows [][]string) int {
	n := 0
	for _, row := range rows {
		n = max(n, len([]rune(row[0])))
	}
	return n
}

func padRight(s string, n int) string {
	return s + strings.Repeat(" ", n-len([]rune(s)))
}

// markdown renders the report for the README.
func (r report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured with `go run ./hack/bench`: %s.\n\n", r.setup)
	writeMarkdownTable(&b, r.table(), true)
	b.WriteString("\n")
	writeMarkdownTable(&b, r.targets(), false)
	b.WriteString("\n")
	for _, n := range r.notes() {
		fmt.Fprintf(&b, "%s\n\n", n)
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

func writeMarkdownTable(b *strings.Builder, rows [][]string, numeric bool) {
	for i, row := range rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
		if i == 0 {
			seps := []string{"---"}
			for range row[1:] {
				if numeric {
					seps = append(seps, "--:")
				} else {
					seps = append(seps, "---")
				}
			}
			b.WriteString("|" + strings.Join(seps, "|") + "|\n")
		}
	}
}

// rps formats a result's requests a second.
func rps(r result) string { return thousands(int64(math.Round(r.wrk.RPS))) }

// thousands formats n with comma separators.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// millis formats d in milliseconds with two decimals.
func millis(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}

// mib formats KiB as MiB with one decimal.
func mib(kib int64) string {
	return strconv.FormatFloat(float64(kib)/1024, 'f', 1, 64) + " MiB"
}
