package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// plainCommand is the hidden subcommand that runs the reference proxy: the
// bench re-executes itself with it so that the reference, like Gatehouse,
// has a process of its own whose CPU and memory can be read from /proc.
const plainCommand = "plain-proxy"

// runPlainProxy serves a plain httputil.ReverseProxy in front of -upstream on
// -listen until ctx ends. It does no auth and no logging.
func runPlainProxy(ctx context.Context, args []string, errOut io.Writer) error {
	fs := flag.NewFlagSet(plainCommand, flag.ContinueOnError)
	fs.SetOutput(errOut)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	rawUpstream := fs.String("upstream", "", "upstream base URL")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	upstream, err := url.Parse(*rawUpstream)
	if err != nil || upstream.Scheme != "http" || upstream.Host == "" {
		return fmt.Errorf("%w: -upstream: want an http:// URL, got %q", errUsage, *rawUpstream)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           newPlainProxy(upstream, errOut),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(errOut, "plain-proxy: ", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(drain); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// newPlainProxy is the reference: the same Rewrite and transport settings
// as Gatehouse's reverse proxy (proxy/server.go), so that the difference the
// bench measures is Gatehouse's own work, not connection handling. With
// http.DefaultTransport (two idle connections a host) 32 concurrent clients
// would make the reference dial the upstream over and over.
func newPlainProxy(upstream *url.URL, errOut io.Writer) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: (&net.Dialer{
				Timeout:   10 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   1024,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
		},
		ErrorLog: log.New(errOut, "plain-proxy: ", 0),
	}
}
