module github.com/gatehouse-dev/gatehouse

go 1.26.8

require (
	github.com/coreos/go-oidc/v3 v3.21.0
	github.com/go-jose/go-jose/v4 v4.1.8
	github.com/google/go-cmp v0.7.0
	github.com/gorilla/securecookie v1.1.2
	golang.org/x/net v0.59.0
	golang.org/x/oauth2 v0.37.0
)
