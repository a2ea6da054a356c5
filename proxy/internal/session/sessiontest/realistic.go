package sessiontest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// RealisticSession returns a session whose tokens look like a typical
// IdP's: an RS256 ID token and a JWT access token signed with a 2048-bit key,
// and an opaque 43-character refresh token.
func RealisticSession(now time.Time) *session.Session {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		panic(err)
	}
	sign := func(claims map[string]any) string {
		b, _ := json.Marshal(claims)
		jws, err := signer.Sign(b)
		if err != nil {
			panic(err)
		}
		s, _ := jws.CompactSerialize()
		return s
	}
	iat := now.Unix()
	idToken := sign(map[string]any{
		"iss": "https://login.example.com/realms/corp", "sub": "3f1c7a52-8d1e-4b4a-9a57-0c9e1f3b2d11",
		"aud": "gatehouse", "azp": "gatehouse", "exp": iat + 300, "iat": iat, "auth_time": iat,
		"nonce": rand.Text(), "sid": rand.Text(), "email": "ann.smith@example.com", "email_verified": true,
		"name": "Ann Smith", "preferred_username": "ann.smith", "given_name": "Ann", "family_name": "Smith",
		"groups": []string{"developers", "team-a"},
	})
	accessToken := sign(map[string]any{
		"iss": "https://login.example.com/realms/corp", "sub": "3f1c7a52-8d1e-4b4a-9a57-0c9e1f3b2d11",
		"aud": []string{"account", "gatehouse"}, "azp": "gatehouse", "exp": iat + 300, "iat": iat,
		"jti": rand.Text(), "scope": "openid email profile", "sid": rand.Text(),
		"realm_access": map[string]any{"roles": []string{"offline_access", "uma_authorization", "default-roles-corp"}},
		"email":        "ann.smith@example.com", "preferred_username": "ann.smith",
	})
	rt := make([]byte, 32)
	_, _ = rand.Read(rt)
	return &session.Session{
		Identity: identity.Identity{
			Subject: "3f1c7a52-8d1e-4b4a-9a57-0c9e1f3b2d11", Email: "ann.smith@example.com", EmailVerified: true,
			PreferredUsername: "ann.smith", Groups: []string{"developers", "team-a"},
		},
		IDToken:      idToken,
		AccessToken:  accessToken,
		RefreshToken: base64.RawURLEncoding.EncodeToString(rt),
		TokenExpiry:  now.Add(5 * time.Minute),
		CreatedAt:    now,
		ExpiresAt:    now.Add(12 * time.Hour),
	}
}
