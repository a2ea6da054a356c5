package proxy

import (
	"io"
	"slices"
	"time"
)

// SetBodyReadTimeout shortens the wait for each read of a request body;
// call it before Serve.
func SetBodyReadTimeout(s *Server, d time.Duration) { s.bodyReadTimeout = d }

// ParseConfigFile runs the --config file parser on b, then sets each value
// it accepted on a default Config as Load would, ignoring bad values. It
// returns the keys the parser accepted, sorted.
func ParseConfigFile(b []byte) ([]string, error) {
	c := DefaultConfig()
	fs := NewFlagSet(&c, io.Discard)
	m, err := parseConfigFile(b, fs)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(m))
	for k, v := range m {
		keys = append(keys, k)
		if f := fs.Lookup(k); f != nil {
			_ = setFromFile(f, v)
		}
	}
	slices.Sort(keys)
	return keys, nil
}
