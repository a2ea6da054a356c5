//go:build !sidecar

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

const statusUsage = `Usage: gatehouse status [-n NAMESPACE | -A] [NAME]

Shows, for each Ingress and HTTPRoute with gatehouse.dev annotations (or
those named NAME),
whether Gatehouse protects it and why not, its provider and hosts, how many
of the Pods behind it carry the sidecar and how many an older one (stale:
they get the current one at their next rollout), the rollout in progress,
and the last problem (the controller's view, else the newest Warning
Event). It reads the cluster as kubectl does (--kubeconfig, $KUBECONFIG,
~/.kube/config) and needs read access to Ingresses, Services, Pods, Events
and, for the controller's view, Secrets of the namespace.

Flags:
`

func runStatus(ctx context.Context, args []string, env func(string) (string, bool), stdout io.Writer) error {
	fs := flag.NewFlagSet("gatehouse status", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var namespace, kubeconfig string
	var all bool
	fs.StringVar(&namespace, "namespace", "", "`namespace` to look at (default the kubeconfig context's)")
	fs.StringVar(&namespace, "n", "", "`namespace` to look at (short for --namespace)")
	fs.BoolVar(&all, "all-namespaces", false, "look at every namespace")
	fs.BoolVar(&all, "A", false, "look at every namespace (short for --all-namespaces)")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig `file` (default $KUBECONFIG, else ~/.kube/config)")
	fs.Usage = flagUsage(fs, statusUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("%w: at most one Ingress or HTTPRoute name, got %q", errUsage, fs.Args())
	}
	name := fs.Arg(0)
	if all && (namespace != "" || name != "") {
		return fmt.Errorf("%w: --all-namespaces: takes neither --namespace nor a name", errUsage)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.Precedence = nil
	if v, ok := env("KUBECONFIG"); ok && v != "" {
		rules.Precedence = filepath.SplitList(v)
	}
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{}
	overrides.Context.Namespace = namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	restConfig, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("%w: --kubeconfig: %w", errUsage, err)
	}
	if !all {
		if namespace, _, err = cc.Namespace(); err != nil {
			return fmt.Errorf("%w: --namespace: %w", errUsage, err)
		}
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := gatewayv1.Install(scheme); err != nil {
		return err
	}
	c, err := client.New(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("connect to the cluster: %w", err)
	}
	statuses, err := controllers.Status(ctx, c, namespace, name)
	if err != nil {
		return err
	}
	return controllers.WriteStatus(stdout, statuses)
}
