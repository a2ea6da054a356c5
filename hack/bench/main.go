// Command bench measures the Gatehouse sidecar against a plain
// httputil.ReverseProxy, each in its own process on 127.0.0.1, with wrk as
// the load generator.
//
// It runs these configurations one after the other against the same small
// upstream (served by this process, which counts new connections):
//
//   - plain: httputil.ReverseProxy without auth, this binary re-executed as
//     "bench plain-proxy" (the reference);
//   - session: bin/gatehouse proxy with a valid session cookie;
//   - redirect: bin/gatehouse proxy answering navigations without a session
//     (302 to the IdP);
//   - Redis: the Redis session store on a local redis-server, with its
//     client-side cache and without it (--redis-client-cache=false).
//
// Then it times how long a logout on one Gatehouse replica takes to be
// refused by another that had the session in its client-side cache.
//
// For each it prints requests/s, p50 and p99 latency, CPU seconds of the proxy
// process per 10,000 requests, new upstream connections per 1,000 requests
// and memory; for Gatehouse also the time from process start to the first
// proxied 200 and the session cookie's size next to the tokens it holds. The
// fake IdP is proxy/idptest, started in this process.
//
// It does not tune the machine, pin CPUs or repeat runs: wrk, the proxy and
// the upstream share the same cores, so compare the columns of one run
// rather than numbers from different machines.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// errUsage marks a bad command line: exit code 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) > 0 && args[0] == plainCommand {
		return runPlainProxy(ctx, args[1:], errOut)
	}
	opts, err := parseFlags(args, errOut)
	if err != nil {
		return err
	}
	return runBench(ctx, opts, out)
}
