// Command demo runs Gatehouse's local demo (make demo): a local control
// plane, the controller, a real OpenID provider and a sample app behind an
// annotated Ingress, with the injected sidecar in front of it. Ctrl-C stops
// everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/gatehouse-dev/gatehouse/e2e/idp"
	"github.com/gatehouse-dev/gatehouse/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	opts := demo.Options{Root: root, Out: os.Stdout}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.BoolVar(&opts.GatewayAPI, "gateway-api", false, "put the sample app behind a Gateway API HTTPRoute instead of an Ingress")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	for name, p := range map[string]*int{"PROXY_PORT": &opts.ProxyPort, "APP_PORT": &opts.AppPort, "IDP_PORT": &opts.IdPPort, "METRICS_PORT": &opts.MetricsPort} {
		if v := os.Getenv(name); v != "" {
			if *p, err = strconv.Atoi(v); err != nil {
				return fmt.Errorf("%s: %q is not a port", name, v)
			}
		}
	}
	d, err := demo.Start(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Printf(`
  Gatehouse demo is running.

    Open        %s
    Sign in as  %s / %s     (group %s: allowed in)
           or   %s / %s   (group admins: refused with 403)
    Sign out    %s_gatehouse/logout
    Metrics     %s (sidecar), %s (token broker)
    Logs        %s (broker.log: one line per token request)

  Press Ctrl-C to stop.
`, d.URL, idp.DemoUser, idp.DemoPassword, demo.AllowedGroup, idp.AliceUser, idp.AlicePassword, d.URL, d.MetricsURL, d.BrokerMetricsURL, d.Dir)
	<-ctx.Done()
	fmt.Println("\n==> Stopping the demo")
	if err := d.Stop(); err != nil {
		return err
	}
	fmt.Println("    everything the demo started has stopped")
	return nil
}
