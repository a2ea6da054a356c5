// Command gatehouse is the one Gatehouse program: "gatehouse proxy" runs the
// sidecar, "gatehouse controller" the Kubernetes controller, "gatehouse
// version" prints the build.
//
// The image carries two builds of this same package: gatehouse, with every
// command, and gatehouse-sidecar, built with the "sidecar" tag, which
// leaves the controller (and with it client-go and controller-runtime) out.
// The controller injects gatehouse-sidecar from its own image, so the two
// never drift apart, and each protected Pod pays only for the proxy: the
// Kubernetes libraries' package initialisation alone costs the proxy about
// 4 MiB of heap and 19 MiB of resident memory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
  proxy          run the authenticating sidecar in front of one app
  controller     watch annotated Ingresses and inject the sidecar into their Pods
  broker         hold the client secrets of providers in broker mode and make their sidecars' token requests
  status         show what Gatehouse protects, its Pods and its problems (reads the cluster as kubectl does)
  webhook-check  check that the controller's Pod webhook answers (the chart's helm test)
  version        print the version

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
	case "broker":
		return runBroker(ctx, rest, env, stdout, stderr)
	case "webhook-check":
		return runWebhookCheck(ctx, rest, env, stdout)
	case "status":
		return runStatus(ctx, rest, env, stdout)
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
