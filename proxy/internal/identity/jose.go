package identity

import (
	"crypto"
	_ "crypto/sha256" // registers SHA-256 for JWK thumbprints
	"encoding/base64"
)

const cryptoSHA256 = crypto.SHA256

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
