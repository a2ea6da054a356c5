package redisstore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// The tracking connection speaks RESP3 itself, because go-redis reads a
// connection only while a command waits for its reply: invalidation pushes
// on an idle pooled connection would sit unread. What follows is the small
// part of RESP3 that connection needs.

// respValue is one RESP3 value. Aggregates (arrays, sets, maps, pushes)
// keep their elements in elems, maps as key, value, key, value.
type respValue struct {
	kind  byte // the RESP type byte: '+', '-', ':', '$', '*', '>', '_', ...
	str   string
	elems []respValue
	null  bool
}

// maxRESPBulk and maxRESPElems bound what one value may claim, so a
// corrupt stream cannot make the reader allocate without limit.
const (
	maxRESPBulk  = 16 << 20
	maxRESPElems = 1 << 20
)

var errRESP = errors.New("malformed RESP reply")

// writeCommand writes args as one RESP command.
func writeCommand(w *bufio.Writer, args ...string) error {
	// A bufio.Writer's errors are sticky: Flush reports any of them.
	_, _ = w.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		_, _ = w.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	return w.Flush()
}

// readValue reads one RESP2 or RESP3 value; attributes are read and
// dropped.
func readValue(r *bufio.Reader) (respValue, error) {
	for {
		line, err := readLine(r)
		if err != nil {
			return respValue{}, err
		}
		if len(line) == 0 {
			return respValue{}, errRESP
		}
		kind, rest := line[0], line[1:]
		switch kind {
		case '+', '-', ':', ',', '(', '#':
			return respValue{kind: kind, str: rest}, nil
		case '_':
			return respValue{kind: kind, null: true}, nil
		case '$', '!', '=':
			n, err := strconv.Atoi(rest)
			if err != nil || n > maxRESPBulk {
				return respValue{}, errRESP
			}
			if n < 0 {
				return respValue{kind: kind, null: true}, nil
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(r, buf); err != nil {
				return respValue{}, err
			}
			return respValue{kind: kind, str: string(buf[:n])}, nil
		case '*', '~', '>', '%', '|':
			n, err := strconv.Atoi(rest)
			if err != nil || n > maxRESPElems {
				return respValue{}, errRESP
			}
			if n < 0 {
				return respValue{kind: kind, null: true}, nil
			}
			if kind == '%' || kind == '|' {
				n *= 2
			}
			v := respValue{kind: kind, elems: make([]respValue, 0, min(n, 64))}
			for range n {
				e, err := readValue(r)
				if err != nil {
					return respValue{}, err
				}
				v.elems = append(v.elems, e)
			}
			if kind == '|' {
				continue // an attribute precedes the value it describes
			}
			return v, nil
		default:
			return respValue{}, fmt.Errorf("%w: type %q", errRESP, kind)
		}
	}
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errRESP
		}
		return "", err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return "", errRESP
	}
	return string(line[:len(line)-2]), nil
}

// err returns the server's error reply as an error, or nil.
func (v respValue) err() error {
	if v.kind == '-' || v.kind == '!' {
		return fmt.Errorf("redis: %s", v.str)
	}
	return nil
}
