package proxy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrConfig marks every error caused by the configuration (flags,
// environment, --config file, secret files). The command exits 2 on it.
var ErrConfig = errors.New("invalid configuration")

// EnvPrefix starts the environment variable of each flag:
// GATEHOUSE_ + the flag name upper-cased with "-" as "_".
const EnvPrefix = "GATEHOUSE_"

// EnvName returns the environment variable that sets flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// clientSecretEnv holds the client secret itself. It is not a flag, so the
// secret never shows in a process listing.
const clientSecretEnv = EnvPrefix + "CLIENT_SECRET"

// redisPasswordEnv holds the Redis password; it replaces any password in
// --redis-url, so the URL can live in a ConfigMap and the password in a
// Secret.
const redisPasswordEnv = EnvPrefix + "REDIS_PASSWORD"

// usageHeader opens --help.
const usageHeader = `Usage: gatehouse proxy [flags]

Runs the Gatehouse sidecar: an OpenID Connect login in front of --upstream.
Browsers without a session are sent to the identity provider; requests that
pass carry the user's identity to the app in X-Auth-Request-* headers and a
signed X-Gatehouse-Identity JWT.

Every flag can also be set in the environment as GATEHOUSE_<FLAG>, upper case
with "-" as "_" (GATEHOUSE_ISSUER_URL), and in the --config YAML file under
the flag's name. A flag on the command line wins over the environment, which
wins over the file. Repeatable flags take a comma-separated list from the
environment. Secrets are read from files (or GATEHOUSE_CLIENT_SECRET), never
from flag values.

Flags:
`

// NewFlagSet returns the proxy's flag set bound to c, with --help text
// written to out.
func NewFlagSet(c *Config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gatehouse proxy", flag.ContinueOnError)
	fs.SetOutput(out)
	c.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		printFlags(fs.Output(), fs)
	}
	return fs
}

// helpWidth is where --help wraps flag descriptions.
const helpWidth = 80

// printFlags lists each flag as "--name type", then its description with
// its default when that is not the zero value, then its environment
// variable. The flag package's PrintDefaults would show "-name", which
// Gatehouse's documentation never uses.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	const indent = "      "
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if _, ok := f.Value.(*durationValue); ok && typ == "value" {
			typ = "duration"
		}
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		fmt.Fprintln(w, head)
		lines := wrap(usage, helpWidth-len(indent))
		if def := defaultText(f); def != "" {
			// The default is never split across lines.
			def = "(default " + def + ")"
			if last := len(lines) - 1; last >= 0 && len(lines[last])+1+len(def) <= helpWidth-len(indent) {
				lines[last] += " " + def
			} else {
				lines = append(lines, def)
			}
		}
		for _, line := range lines {
			fmt.Fprintln(w, indent+line)
		}
		env := "env " + EnvName(f.Name)
		if repeatable(f.Value) {
			env += ", a comma-separated list"
		}
		fmt.Fprintln(w, indent+env)
	})
}

// defaultText is a flag's default as --help shows it, or "" when the
// default is the zero value. Strings are quoted so that spaces show.
func defaultText(f *flag.Flag) string {
	switch f.DefValue {
	case "", "false", "0", "0s":
		return ""
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if _, ok := g.Get().(string); ok {
			return fmt.Sprintf("%q", f.DefValue)
		}
	}
	return f.DefValue
}

// wrap breaks s into lines of at most width bytes at spaces; a word longer
// than width gets a line of its own.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) <= width:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// Load builds a Config from defaults, then the --config file, then the
// environment, then args, and validates it. It returns flag.ErrHelp for
// --help (after printing usage to out) and errors wrapping ErrConfig for
// every bad or missing setting. A configuration error is an errors.Join of
// one error per problem, each naming its flag, environment variable or
// file key, so a caller can print one line per problem.
//
// env looks up environment variables, as os.LookupEnv does; nil means an
// empty environment. Load reads the --config file but no other file: the
// secret files are read by New.
func Load(args []string, env func(string) (string, bool), out io.Writer) (Config, error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	c := DefaultConfig()
	fs := NewFlagSet(&c, out)
	// The flag package prints a parse error and the whole usage; Load
	// returns the error instead, and prints the usage only for --help.
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return c, err
	}
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, commandLineError(err))
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q (flags start with --)", ErrConfig, fs.Arg(0))
	}
	setByUser := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setByUser[f.Name] = true })

	if !setByUser["config"] {
		if v, ok := env(EnvName("config")); ok {
			c.ConfigFile = v
		}
	}
	var file map[string]fileValue
	if c.ConfigFile != "" {
		var err error
		if file, err = readConfigFile(c.ConfigFile, fs); err != nil {
			// Without the file, Validate would call its settings missing.
			var errs []error
			for _, e := range unjoin(err) {
				errs = append(errs, fmt.Errorf("--config: %w", e))
			}
			return c, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
		}
	}
	var errs []error
	c.pinned = map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		if setByUser[f.Name] {
			c.pinned[f.Name] = true
			return
		}
		if v, ok := env(EnvName(f.Name)); ok {
			c.pinned[f.Name] = true
			if err := setFromEnv(f, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(f.Name), err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := setFromFile(f, v); err != nil {
				errs = append(errs, fmt.Errorf("--config: %s: line %d: %s: %w", c.ConfigFile, v.line, f.Name, err))
			}
		}
	})
	if v, ok := env(clientSecretEnv); ok && v != "" {
		c.ClientSecret = Secret(v)
	}
	if v, ok := env(redisPasswordEnv); ok && v != "" {
		c.RedisPassword = Secret(v)
	}
	// A setting that failed to parse kept its default, which Validate
	// accepts, so the problems below are all real ones: report them all.
	if err := c.Validate(); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return c, nil
}

// flagErrorForms are the parse errors of the flag package, which name a
// flag as -name; commandLineError rewrites them to name it as --name, as
// every other configuration error does.
var flagErrorForms = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`^flag provided but not defined: -+(.*)$`), "--$1: unknown flag (gatehouse proxy --help lists them)"},
	{regexp.MustCompile(`^flag needs an argument: -+(.*)$`), "--$1: needs a value"},
	{regexp.MustCompile(`^invalid (?:boolean )?value ("(?:[^"\\]|\\.)*") for (?:flag )?-+([^:]*): (.*)$`), "--$2: invalid value $1: $3"},
}

// commandLineError rewrites a flag package parse error to name the flag
// the way the documentation does. An error of another form is returned
// unchanged.
func commandLineError(err error) error {
	msg := err.Error()
	for _, f := range flagErrorForms {
		if f.re.MatchString(msg) {
			return errors.New(f.re.ReplaceAllString(msg, f.with))
		}
	}
	return err
}

// fileValue is one key's value in a --config file, as written: a YAML
// scalar is one item, a YAML list any number. Scalars keep their text, so
// "client-id: 0123" is the string 0123, not the octal number 83.
type fileValue struct {
	items []string
	list  bool
	line  int
}

// readConfigFile reads the YAML file strictly: every key must be a flag.
func readConfigFile(path string, fs *flag.FlagSet) (map[string]fileValue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := parseConfigFile(b, fs)
	if err != nil {
		var errs []error
		for _, e := range unjoin(err) {
			errs = append(errs, fmt.Errorf("%s: %w", path, e))
		}
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// parseConfigFile parses a --config file: one YAML mapping from flag names
// (but not config itself) to a scalar or a list of scalars. It returns a
// nil map for a file without a YAML document (empty, or only comments) and
// an empty one for "{}". Errors about a key start with "line N: ", and
// problems with keys are all reported at once. It does not check
// the values: setFromFile does.
func parseConfigFile(b []byte, fs *flag.FlagSet) (map[string]fileValue, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("line %d: more than one YAML document (remove the ---)", next.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	root = dealias(root)
	switch {
	case root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null":
		return nil, nil
	case root.Kind != yaml.MappingNode:
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values, e.g. upstream: http://127.0.0.1:8080", root.Line)
	}
	m := make(map[string]fileValue, len(root.Content)/2)
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := dealias(root.Content[i]), dealias(root.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("line %d: keys are flag names, not lists or mappings", k.Line))
			continue
		}
		key := k.Value
		switch {
		case key == "config":
			errs = append(errs, fmt.Errorf("line %d: key config is not allowed: the file cannot name another file", k.Line))
			continue
		case fs.Lookup(key) == nil:
			errs = append(errs, fmt.Errorf("line %d: unknown key %q (keys are flag names without --, e.g. allowed-groups)", k.Line, key))
			continue
		}
		if prev, dup := m[key]; dup {
			errs = append(errs, fmt.Errorf("line %d: key %s is given twice (first on line %d)", k.Line, key, prev.line))
			continue
		}
		fv := fileValue{line: k.Line}
		switch v.Kind {
		case yaml.ScalarNode:
			if v.ShortTag() == "!!null" {
				// "key:" with no value leaves the setting alone.
				m[key] = fv
				continue
			}
			fv.items = []string{v.Value}
		case yaml.SequenceNode:
			fv.list = true
			for _, item := range v.Content {
				item = dealias(item)
				if item.Kind != yaml.ScalarNode || item.ShortTag() == "!!null" {
					errs = append(errs, fmt.Errorf("line %d: %s: list items must be plain values", item.Line, key))
					break
				}
				fv.items = append(fv.items, item.Value)
			}
		default:
			errs = append(errs, fmt.Errorf("line %d: %s: takes a value or a list, not a mapping", v.Line, key))
			continue
		}
		m[key] = fv
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// dealias follows a YAML alias (*name) to the node it names. It does not
// expand aliases inside that node, so a file cannot blow up in memory.
func dealias(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// setFromEnv sets a flag from an environment value: repeatable flags take
// a comma-separated list (DESIGN.md behaviour 15).
func setFromEnv(f *flag.Flag, v string) error {
	if repeatable(f.Value) {
		for _, item := range splitList(v) {
			if err := f.Value.Set(item); err != nil {
				return fmt.Errorf("invalid value %q: %w", item, err)
			}
		}
		return nil
	}
	if err := f.Value.Set(v); err != nil {
		return fmt.Errorf("invalid value %q: %w", v, err)
	}
	return nil
}

// setFromFile sets a flag from a --config value: a scalar, or a list for
// the list flags. A key without a value changes nothing.
func setFromFile(f *flag.Flag, v fileValue) error {
	if !v.list {
		for _, item := range v.items {
			if err := f.Value.Set(item); err != nil {
				return fmt.Errorf("invalid value %q: %w", item, err)
			}
		}
		return nil
	}
	switch fv := f.Value.(type) {
	case *listValue:
		for _, item := range v.items {
			if err := fv.Set(item); err != nil {
				return fmt.Errorf("invalid value %q: %w", item, err)
			}
		}
		return nil
	case *commaValue:
		fv.setItems(v.items)
		return nil
	default:
		return errors.New("takes a single value, not a list")
	}
}

// LoadPolicyFile reads the policy keys of a --config file on top of base:
// keys pinned by flag or environment keep base's values, the others take
// the file's values, and a policy key missing from the file is empty. The
// rest of the file is checked for syntax and unknown keys but otherwise
// ignored, since other settings need a restart.
//
// A file without any YAML document is an error rather than an empty
// policy: a writer that truncates the file before writing it must not
// open the gates for a moment. Write {} for a file with no settings.
func LoadPolicyFile(path string, base Config) (Config, error) {
	scratch := DefaultConfig()
	file, err := readConfigFile(path, NewFlagSet(&scratch, io.Discard))
	if err != nil {
		return base, err
	}
	if file == nil {
		return base, fmt.Errorf("%s holds no YAML document (write {} for an empty configuration)", path)
	}
	c := base
	target := NewFlagSet(&c, io.Discard)
	for _, key := range policyKeys {
		if base.pinned[key] {
			continue
		}
		clearPolicyKey(&c, key)
		if v, ok := file[key]; ok {
			if err := setFromFile(target.Lookup(key), v); err != nil {
				return base, fmt.Errorf("%s: line %d: %s: %w", path, v.line, key, err)
			}
		}
	}
	return c, nil
}

func clearPolicyKey(c *Config, key string) {
	switch key {
	case "allowed-emails":
		c.AllowedEmails = nil
	case "allowed-email-domains":
		c.AllowedEmailDomains = nil
	case "allowed-groups":
		c.AllowedGroups = nil
	case "skip-auth-path":
		c.SkipAuthPaths = nil
	}
}

// Args renders c as command-line flags: every setting that differs from
// its default, in the flags' alphabetical order. The controller uses it to
// build the sidecar's command line, so what it renders is what Load parses
// back. It does not render ClientSecret, which is never a flag. A comma
// list (--allowed-*) cannot carry an item that holds a comma or starts or
// ends with a space; only a --config file's YAML list can.
func (c Config) Args() []string {
	def := DefaultConfig()
	defFS := NewFlagSet(&def, io.Discard)
	cur := c
	curFS := NewFlagSet(&cur, io.Discard)
	var args []string
	curFS.VisitAll(func(f *flag.Flag) {
		if f.Value.String() == defFS.Lookup(f.Name).Value.String() {
			return
		}
		switch v := f.Value.(type) {
		case *listValue:
			for _, item := range *v.p {
				args = append(args, "--"+f.Name+"="+item)
			}
		default:
			args = append(args, "--"+f.Name+"="+f.Value.String())
		}
	})
	return args
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch s {
	case "debug", "info", "warn", "error":
		return l, l.UnmarshalText([]byte(s))
	}
	return l, fmt.Errorf("%q is not debug, info, warn or error", s)
}

// LogLevelOf parses a --log-level value that Validate accepted.
func LogLevelOf(s string) slog.Level {
	l, _ := parseLevel(s)
	return l
}
