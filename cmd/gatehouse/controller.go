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
	"runtime/debug"
	"strconv"

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
	if limit, ok := softMemoryLimit(env); ok {
		debug.SetMemoryLimit(limit)
		logger.Info("Go memory limit set from the container's", "bytes", limit)
	}
	if _, ok := env("GOGC"); !ok {
		debug.SetGCPercent(controllerGCPercent)
	}
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

// controllerGCPercent is the controller's GOGC unless set in its
// environment. Its heap is mostly its caches, which live as long as the
// process: at the default of 100 the runtime lets garbage grow to as much
// again before collecting, and keeps those pages after the initial
// listing's peak. At 50, make bench-controller measured 129 MiB RSS at
// 10,000 Pods instead of 161 to 172, for a few more short collections (see
// the README's Performance section).
const controllerGCPercent = 50

// softMemoryLimit is the Go runtime's soft memory limit for a controller
// whose container may use $GATEHOUSE_MEMORY_LIMIT bytes (the chart sets it
// from resources.limits.memory): 90% of it, the rest for what the runtime
// does not count (the binary's mapped pages). Near it the garbage collector
// runs more often instead of the kernel killing the leader at the limit,
// which matters at the peak of the initial listing of a large cluster. None
// when GOMEMLIMIT is set (the runtime has read it) or no limit is known.
func softMemoryLimit(env func(string) (string, bool)) (int64, bool) {
	if _, ok := env("GOMEMLIMIT"); ok {
		return 0, false
	}
	v, ok := env("GATEHOUSE_MEMORY_LIMIT")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n / 10 * 9, true
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
