//go:build !sidecar

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/proxy"
)

const controllerUsage = `Usage: gatehouse controller [flags]

Runs the Gatehouse controller: a mutating admission webhook injects the
sidecar into the Pods behind Ingresses annotated gatehouse.dev/enabled: "true",
and a reconciler keeps each Ingress's Secret and replaces Pods created before
the annotation. It finds the cluster in-cluster, else with --kubeconfig or
$KUBECONFIG.

Flags:
`

func runController(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	cfg := controllers.DefaultConfig()
	if v, ok := env("POD_NAMESPACE"); ok {
		cfg.Namespace = v
	}
	if v, ok := env("GATEHOUSE_IMAGE"); ok {
		cfg.SidecarImage = v
	}
	if v, ok := env("KUBECONFIG"); ok {
		cfg.Kubeconfig = v
	}
	fs := flag.NewFlagSet("gatehouse controller", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfg.RegisterFlags(fs)
	fs.Usage = flagUsage(fs, controllerUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if cfg.WebhookURL != "" && cfg.WebhookCertDir != "" {
		return fmt.Errorf("%w: --webhook-url: works only with the self-made certificate; drop --webhook-cert-dir", errUsage)
	}
	log := newLogger(stderr, proxy.LogLevelOf(cfg.LogLevel))
	logger := logr.FromSlogHandler(log.Handler())
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	restConfig, err := restConfigFor(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("%w: --kubeconfig: %w", errUsage, err)
	}
	opts := controllers.Options{RESTConfig: restConfig, Log: logger}
	// A controller reached at a loopback --webhook-url serves only there.
	if u, err := url.Parse(cfg.WebhookURL); err == nil && cfg.WebhookURL != "" {
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			opts.WebhookHost = u.Hostname()
		}
	}
	return controllers.Run(ctx, cfg, opts)
}

// flagUsage prints header, then each flag of fs with its usage and default.
func flagUsage(fs *flag.FlagSet, header string) func() {
	return func() {
		fmt.Fprint(fs.Output(), header)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(fs.Output(), "  --%s %s\n      %s", f.Name, name, usage)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(fs.Output(), " (default %s)", f.DefValue)
			}
			fmt.Fprintln(fs.Output())
		})
	}
}

// restConfigFor finds the cluster: the kubeconfig file when given, else
// the in-cluster configuration.
func restConfigFor(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}
