//go:build !sidecar

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/gatehouse-dev/gatehouse/broker"
	"github.com/gatehouse-dev/gatehouse/proxy"
)

const brokerUsage = `Usage: gatehouse broker [flags]

Runs the token broker for identity providers with clientSecretMode: broker.
Their sidecars hold no client secret: they send their code exchange, refresh
and revocation here over TLS, with their Pod's projected ServiceAccount token.
The broker checks the token with a TokenReview, checks that the provider
serves the token's namespace and that a code's redirect_uri is registered for
it, then makes the request at the identity provider with the client secret
from --namespace and relays the answer. It stores no tokens.

It finds the cluster in-cluster, else with --kubeconfig or $KUBECONFIG. Every
flag can also be set in the environment as GATEHOUSE_<FLAG>, upper case with
"-" as "_" (GATEHOUSE_TLS_CERT_DIR); a flag on the command line wins.

Flags:
`

func runBroker(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	cfg := broker.DefaultConfig()
	if v, ok := env("POD_NAMESPACE"); ok {
		cfg.Namespace = v
	}
	if v, ok := env("KUBECONFIG"); ok {
		cfg.Kubeconfig = v
	}
	fs := flag.NewFlagSet("gatehouse broker", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	fs.Usage = flagUsage(fs, brokerUsage)
	// The flag package would print the whole usage with a parse error;
	// only --help gets it.
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(stdout)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s (gatehouse broker --help lists the flags)", errUsage, flagName.ReplaceAllString(err.Error(), "$1 --$2"))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q (flags start with --)", errUsage, fs.Arg(0))
	}
	if err := brokerEnv(fs, env); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	log := newLogger(stderr, proxy.LogLevelOf(cfg.LogLevel))
	logger := logr.FromSlogHandler(log.Handler())
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	restConfig, err := restConfigFor(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("%w: --kubeconfig: %w", errUsage, err)
	}
	srv, err := broker.New(cfg, broker.Deps{Log: log, RESTConfig: restConfig})
	if errors.Is(err, broker.ErrConfig) {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err != nil {
		return err
	}
	log.Info("Starting gatehouse broker", "version", version)
	return srv.Run(ctx)
}

// flagName finds a flag named the flag package's way (-name) in its parse
// errors, to name it as the documentation does (--name).
var flagName = regexp.MustCompile(`(flag|defined:|argument:) -+([A-Za-z0-9-]+)`)

// brokerEnv sets each flag not given on the command line from its
// GATEHOUSE_ environment variable, when that is set.
func brokerEnv(fs *flag.FlagSet, env func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := env(proxy.EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid value %q: %w", proxy.EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}
