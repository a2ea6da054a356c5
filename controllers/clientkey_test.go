package controllers

import (
	"strings"
	"testing"
)

// TestClientKeyRef: a private key is for the broker alone, and a provider
// has one credential.
func TestClientKeyRef(t *testing.T) {
	t.Parallel()
	const base = "providers:\n  - {name: corp, issuerURL: 'https://login.example.com', clientID: c"
	const key = ", clientKeyRef: {name: idp-key, key: tls.key}"
	tests := []struct {
		name, file string
		want       []string // each a problem the error names; none: valid
	}{
		{name: "key in broker mode", file: base + key + ", clientSecretMode: broker}\n"},
		{name: "key with a kid", file: base + key + ", clientKeyID: signing-2025, clientSecretMode: broker}\n"},
		{name: "key without a mode", file: base + key + "}\n", want: []string{"providers[0].clientKeyRef: needs clientSecretMode broker"}},
		{name: "key in copy mode", file: base + key + ", clientSecretMode: copy}\n", want: []string{"providers[0].clientKeyRef: needs clientSecretMode broker"}},
		{name: "key and secret", file: base + key + ", clientSecretRef: {name: s, key: k}, clientSecretMode: broker}\n",
			want: []string{"providers[0].clientKeyRef: clientSecretRef is set too"}},
		{name: "key without its key", file: base + ", clientKeyRef: {name: idp-key}, clientSecretMode: broker}\n",
			want: []string{"providers[0].clientKeyRef: name and key are required"}},
		{name: "key without a name", file: base + ", clientKeyRef: {key: tls.key}, clientSecretMode: broker}\n",
			want: []string{"providers[0].clientKeyRef: name and key are required"}},
		{name: "kid without a key", file: base + ", clientSecretRef: {name: s, key: k}, clientKeyID: k1, clientSecretMode: broker}\n",
			want: []string{"providers[0].clientKeyID: needs clientKeyRef"}},
		{name: "broker mode without a credential", file: base + ", clientSecretMode: broker}\n",
			want: []string{"providers[0].clientSecretMode: broker needs clientSecretRef or clientKeyRef"}},
		{name: "every problem at once", file: base + ", clientKeyRef: {name: idp-key}, clientSecretRef: {name: s, key: k}}\n",
			want: []string{"name and key are required", "needs clientSecretMode broker", "clientSecretRef is set too"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fc, err := ParseFile([]byte(tc.file))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if p, _ := fc.Provider("corp"); !p.Brokered() || p.ClientKeyRef == nil {
					t.Errorf("parsed %+v", p)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
