package proxy

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// listValue is a repeatable flag: each use appends one value, and the first
// use replaces the default. From the environment it takes a comma-separated
// list (DESIGN.md behaviour 15); from a --config file, a YAML list.
type listValue struct {
	p   *[]string
	set bool
}

func (v *listValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v *listValue) Set(s string) error {
	if !v.set {
		*v.p = nil
		v.set = true
	}
	*v.p = append(*v.p, s)
	return nil
}

// commaValue is a flag holding a comma-separated list; each use replaces it.
type commaValue struct{ p *[]string }

func (v *commaValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v *commaValue) Set(s string) error {
	*v.p = splitList(s)
	return nil
}

// setItems replaces the list with items given one by one, as a YAML list
// gives them: an item may then hold a comma (an LDAP group DN such as
// cn=admins,ou=groups,dc=example,dc=com), which the flag form cannot carry.
func (v *commaValue) setItems(items []string) {
	var out []string
	for _, item := range items {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	*v.p = out
}

// splitList splits on commas, trims spaces and drops empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// repeatable reports whether a flag.Value is a repeatable list.
func repeatable(v any) bool {
	_, ok := v.(*listValue)
	return ok
}

// durationValue is a time.Duration flag. Unlike the flag package's, its
// errors say what a duration looks like, the same from a flag, the
// environment or the file, and it prints as 12h rather than 12h0m0s.
type durationValue struct{ p *time.Duration }

var errDuration = errors.New("want a duration such as 90s, 15m or 12h")

func (v *durationValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return shortDuration(*v.p)
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return errDuration
	}
	*v.p = d
	return nil
}

// Get makes durationValue a flag.Getter.
func (v *durationValue) Get() any { return *v.p }

// shortDuration formats d without zero minutes or seconds: 12h, 1h30m, 20s.
// time.ParseDuration reads it back to the same value.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// boolValue is a boolean flag whose errors say which values it takes.
type boolValue struct{ p *bool }

var errBool = errors.New("want true or false")

func (v *boolValue) String() string {
	if v == nil || v.p == nil {
		return "false"
	}
	return strconv.FormatBool(*v.p)
}

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errBool
	}
	*v.p = b
	return nil
}

// IsBoolFlag lets --cookie-secure stand alone for --cookie-secure=true.
func (v *boolValue) IsBoolFlag() bool { return true }

// Get makes boolValue a flag.Getter.
func (v *boolValue) Get() any { return *v.p }
