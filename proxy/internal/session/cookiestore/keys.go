// Package cookiestore keeps the whole session in the browser, encrypted and
// authenticated with gorilla/securecookie, split over numbered cookies when
// it does not fit in one.
//
// It does not keep anything server side, so a copied cookie stays valid until
// it expires; the Redis store exists for deployments that need logout to kill
// copies.
package cookiestore

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/securecookie"
)

// MinSecretLen is the shortest cookie secret accepted, in bytes.
const MinSecretLen = 32

// Codecs derives a securecookie codec for each secret, newest first, with
// HKDF-SHA256: a 64-byte HMAC key and a 32-byte AES-256 key per secret, so a
// secret's raw bytes are never used directly as two different keys.
// securecookie encodes with the first codec and decodes with any of them,
// which is how an older secret stays accepted during rotation. maxAge bounds
// the age of an accepted cookie (securecookie's own timestamp).
func Codecs(secrets [][]byte, maxAge time.Duration) ([]securecookie.Codec, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no cookie secret")
	}
	codecs := make([]securecookie.Codec, 0, len(secrets))
	for i, s := range secrets {
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("cookie secret %d is %d bytes, need at least %d", i+1, len(s), MinSecretLen)
		}
		hashKey, err := hkdf.Key(sha256.New, s, nil, "gatehouse cookie hmac v1", 64)
		if err != nil {
			return nil, fmt.Errorf("derive cookie hmac key: %w", err)
		}
		blockKey, err := hkdf.Key(sha256.New, s, nil, "gatehouse cookie aes v1", 32)
		if err != nil {
			return nil, fmt.Errorf("derive cookie encryption key: %w", err)
		}
		sc := securecookie.New(hashKey, blockKey)
		sc.SetSerializer(securecookie.NopEncoder{})
		sc.MaxAge(int(maxAge / time.Second))
		sc.MaxLength(0) // the store bounds sizes itself, per chunk
		codecs = append(codecs, sc)
	}
	return codecs, nil
}
