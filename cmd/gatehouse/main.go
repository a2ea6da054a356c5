// Command gatehouse is the one Gatehouse binary: "gatehouse proxy" runs the
// sidecar, "gatehouse version" prints the build.
package main

import (
	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/gatehouse-dev/gatehouse/controllers"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// errUsage marks a bad command line: exit code 2, as for proxy.ErrConfig.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
		printError(os.Stderr, err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for a bad command line or configuration, 1 for any other
// failure and 0 for none.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage) || errors.Is(err, proxy.ErrConfig):
		return 2
	default:
		return 1
	}
}

// printError writes one "gatehouse: " line per problem in err, so that
// every configuration problem shows at once, each naming its flag.
func printError(w io.Writer, err error) {
	for _, p := range problems(err) {
		fmt.Fprintf(w, "gatehouse: %s\n", p)
	}
}

// sentinels only classify errors (see exitCode); each problem names its
// flag, so their text is left out of the message.
var sentinels = []error{errUsage, proxy.ErrConfig}

// problems splits err into its separate problems: it drops a sentinel
// wrapped in front as fmt.Errorf("%w: %w", sentinel, inner) and takes the
// parts of an errors.Join one by one. Each problem is one line.
func problems(err error) []string {
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		parts := multi.Unwrap()
		if len(parts) == 2 && slices.Contains(sentinels, parts[0]) &&
			err.Error() == parts[0].Error()+": "+parts[1].Error() {
			return problems(parts[1])
		}
		if isJoin(err, parts) {
			var out []string
			for _, p := range parts {
				out = append(out, problems(p)...)
			}
			return out
		}
	}
	msg := err.Error()
	for _, s := range sentinels {
		msg = strings.TrimPrefix(msg, s.Error()+": ")
	}
	return []string{oneLine(msg)}
}

// isJoin reports whether err reads as errors.Join(parts...) does. Its type
// is not exported, so the text tells.
func isJoin(err error, parts []error) bool {
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		if p == nil {
			return false
		}
		texts = append(texts, p.Error())
	}
	return len(parts) > 0 && err.Error() == strings.Join(texts, "\n")
}

// oneLine folds a message that spans lines (YAML errors do) into one.
func oneLine(msg string) string {
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, " ")
}

const topUsage = `Usage: gatehouse <command> [flags]

Commands:
  proxy       run the authenticating sidecar in front of one app
  controller  watch annotated Ingresses and inject the sidecar into their Pods
  version     print the version

Run "gatehouse <command> --help" for a command's flags.
`

// run is the whole program with its inputs as parameters, so tests can
// drive it in-process.
func run(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return fmt.Errorf("%w: no command (want proxy, controller or version)", errUsage)
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "controller":
		return runController(ctx, args[1:], env, stdout, stderr)
	case "proxy":
		return runProxy(ctx, rest, env, stdout, stderr)
	case "version", "--version":
		return printVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, topUsage)
		return nil
	default:
		fmt.Fprint(stderr, topUsage)
		return fmt.Errorf("%w: unknown command %q (want proxy, controller or version)", errUsage, cmd)
	}
}

func runProxy(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	cfg, err := proxy.Load(args, env, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(stderr, proxy.LogLevelOf(cfg.LogLevel))
	srv, err := proxy.New(cfg, proxy.Deps{Log: log})
	if err != nil {
		return err
	}
	log.Info("Starting gatehouse proxy", "version", version)
	return srv.Run(ctx)
}

// newLogger is the process's one slog JSON handler.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func printVersion(w io.Writer) error {
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	_, err := fmt.Fprintf(w, "gatehouse %s (%s)\n", version, goVersion)
	return err
}

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
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), controllerUsage)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(fs.Output(), "  --%s %s\n      %s", f.Name, name, usage)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(fs.Output(), " (default %s)", f.DefValue)
			}
			fmt.Fprintln(fs.Output())
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
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
	return controllers.Run(ctx, cfg, controllers.Options{RESTConfig: restConfig, Log: logger})
}

// restConfigFor finds the cluster: the kubeconfig file when given, else
// the in-cluster configuration.
func restConfigFor(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}
