package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Reports as wrk 4.1.0 (Debian) prints them.
const (
	wrkOK = `Running 1s test @ http://127.0.0.1:18999/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    43.17ms   73.06ms 345.01ms   85.90%
    Req/Sec   221.62    281.61   663.00     75.00%
  Latency Distribution
     50%    6.70ms
     75%   45.14ms
     90%  154.51ms
     99%  295.63ms
  179 requests in 1.09s, 562.35KB read
Requests/sec:    164.76
Transfer/sec:    517.61KB
`
	wrkErrors = `Running 10s test @ http://127.0.0.1:4180/bench
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.00us  200.10us   1.20s    90.00%
    Req/Sec    20.01k     1.00k   22.00k    70.00%
  Latency Distribution
     50%  790.00us
     75%    1.00ms
     90%    1.50ms
     99%    1.02s
  400123 requests in 10.00s, 60.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 189
Requests/sec:  40012.30
Transfer/sec:      6.00MB
`
)

func TestParseWrk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want wrkResult
	}{
		{"clean run", wrkOK, wrkResult{
			Requests: 179, Elapsed: 1090 * time.Millisecond, RPS: 164.76,
			P50: 6700 * time.Microsecond, P99: 295630 * time.Microsecond,
		}},
		{"errors and mixed units", wrkErrors, wrkResult{
			Requests: 400123, Elapsed: 10 * time.Second, RPS: 40012.30,
			P50: 790 * time.Microsecond, P99: 1020 * time.Millisecond,
			SocketErrors: 10, BadStatus: 189,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseWrk(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			// Float parsing of "6.70" times a unit may be off by a
			// nanosecond; compare at microsecond precision.
			round := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
			got.P50, got.P99, got.Elapsed = round(got.P50), round(got.P99), round(got.Elapsed)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseWrk (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseWrkRejectsIncompleteReports(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, wantErr string }{
		{"no --latency", strings.Replace(wrkOK, "Latency Distribution", "", 1), "50%, 99%"},
		{"connection refused", "unable to connect to 127.0.0.1:18999 Connection refused\n", "requests"},
		{"nothing completed", strings.Replace(wrkOK, "179 requests", "0 requests", 1), "no requests"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseWrk(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("parseWrk = %v, want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestWrkArgs(t *testing.T) {
	t.Parallel()
	w := wrkRun{path: "wrk", threads: 2, connections: 32, duration: 10 * time.Second, url: "http://127.0.0.1:1/bench", headers: []string{"Accept: text/html"}}
	want := []string{"-t", "2", "-c", "32", "-d", "10s", "--timeout", "5s", "--latency", "-H", "Accept: text/html", "http://127.0.0.1:1/bench"}
	if diff := cmp.Diff(want, w.args()); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
}
