package proxy

import "log/slog"

// Secret holds secret bytes and never prints them.
type Secret []byte

// String returns a placeholder.
func (Secret) String() string { return "[redacted]" }

// LogValue keeps secrets out of structured logs.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// GoString keeps secrets out of %#v.
func (Secret) GoString() string { return "[redacted]" }
