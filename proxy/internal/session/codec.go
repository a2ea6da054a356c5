package session

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

// formatVersion is the first byte of every encoded session.
const formatVersion = 1

// maxEncoded bounds a decoded session, so a hostile input cannot make the
// decoder allocate without limit.
const maxEncoded = 256 << 10

// Token kinds in the encoding.
const (
	tokenRaw    = 0 // bytes as given
	tokenDotB64 = 1 // dot-separated base64url segments (JWTs), stored decoded
)

var errCorrupt = errors.New("corrupt session encoding")

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// flateReaders reuses decompressors: a new one allocates about 40 KB, which
// on every request is most of the proxy's garbage.
var flateReaders = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}

// rawBuffers holds decompressed sessions while they are parsed.
var rawBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Marshal encodes s compactly: a binary layout, JWT segments stored as raw
// bytes instead of base64url text, then DEFLATE. Cookies pay for every byte
// twice over in base64, so this keeps the session cookie within about 1.4
// times the size of the tokens it carries. Marshal does not encrypt; stores
// do.
func Marshal(s *Session) ([]byte, error) {
	var raw bytes.Buffer
	raw.WriteByte(formatVersion)
	putTime(&raw, s.CreatedAt)
	putTime(&raw, s.ExpiresAt)
	putTime(&raw, s.TokenExpiry)
	putTime(&raw, s.TokenIssuedAt)
	putString(&raw, s.SID)
	id := s.Identity
	putString(&raw, id.Subject)
	putString(&raw, id.Email)
	if id.EmailVerified {
		raw.WriteByte(1)
	} else {
		raw.WriteByte(0)
	}
	putString(&raw, id.PreferredUsername)
	putUvarint(&raw, uint64(len(id.Groups)))
	for _, g := range id.Groups {
		putString(&raw, g)
	}
	for _, tok := range []string{s.IDToken, s.AccessToken, s.RefreshToken} {
		putToken(&raw, tok)
	}

	var out bytes.Buffer
	out.Grow(raw.Len())
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	fw.Reset(&out)
	if _, err := fw.Write(raw.Bytes()); err != nil {
		return nil, fmt.Errorf("compress session: %w", err)
	}
	if err := fw.Close(); err != nil {
		return nil, fmt.Errorf("compress session: %w", err)
	}
	return out.Bytes(), nil
}

// Unmarshal decodes what Marshal produced. Any malformed input gives an
// error wrapping ErrNotFound; it never panics.
func Unmarshal(b []byte) (*Session, error) {
	fr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(fr)
	if err := fr.(flate.Resetter).Reset(bytes.NewReader(b), nil); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, errCorrupt)
	}
	buf := rawBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer rawBuffers.Put(buf)
	n, err := buf.ReadFrom(io.LimitReader(fr, maxEncoded+1))
	if err != nil || n > maxEncoded {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, errCorrupt)
	}
	// Every string below is copied out of buf, so buf can be reused.
	d := decoder{buf: buf.Bytes()}
	if d.byte() != formatVersion {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, errCorrupt)
	}
	s := &Session{}
	s.CreatedAt = d.time()
	s.ExpiresAt = d.time()
	s.TokenExpiry = d.time()
	s.TokenIssuedAt = d.time()
	s.SID = d.string()
	s.Identity = identity.Identity{Subject: d.string(), Email: d.string(), EmailVerified: d.byte() == 1}
	s.Identity.PreferredUsername = d.string()
	if n := d.uvarint(); n > 0 && n <= uint64(len(d.buf)) {
		s.Identity.Groups = make([]string, 0, n)
		for range n {
			s.Identity.Groups = append(s.Identity.Groups, d.string())
		}
	} else if n != 0 {
		d.err = errCorrupt
	}
	s.IDToken = d.token()
	s.AccessToken = d.token()
	s.RefreshToken = d.token()
	if d.err != nil || len(d.buf) != 0 {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, errCorrupt)
	}
	return s, nil
}

func putUvarint(b *bytes.Buffer, v uint64) { b.Write(binary.AppendUvarint(nil, v)) }

func putTime(b *bytes.Buffer, t time.Time) {
	if t.IsZero() {
		putUvarint(b, 0)
		return
	}
	putUvarint(b, uint64(max(t.UnixMilli(), 1)))
}

func putString(b *bytes.Buffer, s string) {
	putUvarint(b, uint64(len(s)))
	b.WriteString(s)
}

// putToken stores a JWT-shaped token as its decoded segments when the
// decoding round-trips exactly, and as raw text otherwise.
func putToken(b *bytes.Buffer, tok string) {
	if segs, ok := splitB64(tok); ok {
		b.WriteByte(tokenDotB64)
		putUvarint(b, uint64(len(segs)))
		for _, s := range segs {
			putUvarint(b, uint64(len(s)))
			b.Write(s)
		}
		return
	}
	b.WriteByte(tokenRaw)
	putString(b, tok)
}

func splitB64(tok string) ([][]byte, bool) {
	if tok == "" {
		return nil, false
	}
	parts := strings.Split(tok, ".")
	if len(parts) > 8 {
		return nil, false
	}
	segs := make([][]byte, len(parts))
	for i, p := range parts {
		s, err := base64.RawURLEncoding.Strict().DecodeString(p)
		if err != nil || base64.RawURLEncoding.EncodeToString(s) != p {
			return nil, false
		}
		segs[i] = s
	}
	return segs, true
}

// decoder reads the binary layout; the first error sticks and later reads
// return zero values.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.buf) == 0 {
		d.err = errCorrupt
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.buf)) {
		d.err = errCorrupt
		return nil
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) time() time.Time {
	v := d.uvarint()
	if v == 0 || v > 1<<50 {
		return time.Time{}
	}
	return time.UnixMilli(int64(v))
}

func (d *decoder) token() string {
	switch d.byte() {
	case tokenRaw:
		return d.string()
	case tokenDotB64:
		n := d.uvarint()
		if n == 0 || n > 8 {
			d.err = errCorrupt
			return ""
		}
		var sb strings.Builder
		for i := range n {
			if i > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(base64.RawURLEncoding.EncodeToString(d.bytes()))
		}
		return sb.String()
	default:
		d.err = errCorrupt
		return ""
	}
}
