package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkInstallHint is what to do when wrk is missing.
const wrkInstallHint = "install it with: sudo apt-get install -y wrk (Debian, Ubuntu); or pass -wrk /path/to/wrk"

// wrkRun is one wrk invocation.
type wrkRun struct {
	path        string
	threads     int
	connections int
	duration    time.Duration // whole seconds: wrk's -d takes no fractions
	url         string
	headers     []string // "Name: value"
}

// wrkResult is what wrk --latency reports.
type wrkResult struct {
	Requests     int64
	Elapsed      time.Duration
	RPS          float64
	P50, P99     time.Duration
	SocketErrors int64 // connect + read + write + timeout
	BadStatus    int64 // responses that were neither 2xx nor 3xx
}

func (w wrkRun) args() []string {
	args := []string{
		"-t", strconv.Itoa(w.threads),
		"-c", strconv.Itoa(w.connections),
		"-d", strconv.Itoa(int(w.duration/time.Second)) + "s",
		"--timeout", "5s",
		"--latency",
	}
	for _, h := range w.headers {
		args = append(args, "-H", h)
	}
	return append(args, w.url)
}

// run runs wrk and parses its report.
func (w wrkRun) run(ctx context.Context) (wrkResult, error) {
	cmd := exec.CommandContext(ctx, w.path, w.args()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", w.url, err, out)
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", w.url, err, out)
	}
	return res, nil
}

var (
	wrkPercentile = regexp.MustCompile(`^\s*(50|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	wrkRequests   = regexp.MustCompile(`^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),`)
	wrkRPS        = regexp.MustCompile(`^Requests/sec:\s+([0-9.]+)\s*$`)
	wrkSocket     = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkBadStatus  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads the report of wrk 4 run with --latency. Requests, the
// rate and the 50th and 99th percentiles are required; the error lines
// appear only when there were errors.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, haveRPS, have50, have99, inDist bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "Latency Distribution" {
			inDist = true
			continue
		}
		if m := wrkPercentile.FindStringSubmatch(line); inDist && m != nil {
			d, err := wrkDuration(m[2], m[3])
			if err != nil {
				return r, err
			}
			if m[1] == "50" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
			continue
		}
		inDist = inDist && strings.Contains(line, "%")
		if m := wrkRequests.FindStringSubmatch(line); m != nil {
			n, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return r, fmt.Errorf("requests %q: %w", m[1], err)
			}
			d, err := wrkDuration(m[2], m[3])
			if err != nil {
				return r, err
			}
			r.Requests, r.Elapsed, haveReq = n, d, true
		}
		if m := wrkRPS.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				return r, fmt.Errorf("requests/sec %q: %w", m[1], err)
			}
			r.RPS, haveRPS = v, true
		}
		if m := wrkSocket.FindStringSubmatch(line); m != nil {
			for _, s := range m[1:] {
				n, _ := strconv.ParseInt(s, 10, 64)
				r.SocketErrors += n
			}
		}
		if m := wrkBadStatus.FindStringSubmatch(line); m != nil {
			r.BadStatus, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	var missing []string
	for _, c := range []struct {
		name string
		ok   bool
	}{{"requests", haveReq}, {"Requests/sec", haveRPS}, {"50%", have50}, {"99%", have99}} {
		if !c.ok {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("wrk report lacks %s (was it run with --latency?)", strings.Join(missing, ", "))
	}
	if r.Requests == 0 {
		return r, errors.New("wrk completed no requests")
	}
	return r, nil
}

// wrkDuration converts a wrk time such as "1.23ms" (units.c: us, ms, s, m,
// h) to a Duration.
func wrkDuration(value, unit string) (time.Duration, error) {
	v, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return 0, fmt.Errorf("time %q: %w", value+unit, err)
	}
	scale := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	return time.Duration(v * float64(scale)), nil
}
