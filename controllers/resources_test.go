package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func q(s string) resource.Quantity { return resource.MustParse(s) }

func TestParseResources(t *testing.T) {
	t.Parallel()
	r, err := parseResources(" requests.cpu=20m, requests.memory=48Mi,limits.memory=128Mi ")
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests.Cpu().String() != "20m" || r.Requests.Memory().String() != "48Mi" || r.Limits.Memory().String() != "128Mi" || r.Limits.Cpu().Sign() != 0 {
		t.Errorf("parsed %+v", r)
	}
	for _, bad := range []string{"memory=48Mi", "requests.memory", "requests.memory=lots", "limits.cpu=-1", "limits.cpu=0", "requests.gpu=1"} {
		if _, err := parseResources(bad); err == nil {
			t.Errorf("parseResources(%q) accepted", bad)
		}
	}
}

func FuzzParseResources(f *testing.F) {
	for _, s := range []string{"requests.cpu=20m,limits.memory=128Mi", "requests.memory=1e3", ",,", "limits.memory=64Mi,limits.memory=32Mi", "requests.cpu==1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := parseResources(in)
		if err != nil {
			return
		}
		// Whatever is accepted is positive and only cpu or memory.
		for _, list := range []corev1.ResourceList{r.Requests, r.Limits} {
			for name, v := range list {
				if (name != corev1.ResourceCPU && name != corev1.ResourceMemory) || v.Sign() <= 0 {
					t.Fatalf("parseResources(%q) = %v", in, r)
				}
			}
		}
	})
}

func TestCheckBounds(t *testing.T) {
	t.Parallel()
	b := &ResourceBounds{Min: corev1.ResourceList{corev1.ResourceMemory: q("16Mi")}, Max: corev1.ResourceList{corev1.ResourceMemory: q("512Mi"), corev1.ResourceCPU: q("1")}}
	ok := corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: q("32Mi")}, Limits: corev1.ResourceList{corev1.ResourceMemory: q("64Mi")}}
	if err := checkBounds(ok, b); err != nil {
		t.Errorf("within bounds: %v", err)
	}
	for name, r := range map[string]corev1.ResourceRequirements{
		"below the minimum":   {Requests: corev1.ResourceList{corev1.ResourceMemory: q("8Mi")}},
		"above the maximum":   {Limits: corev1.ResourceList{corev1.ResourceMemory: q("1Gi")}},
		"cpu above":           {Limits: corev1.ResourceList{corev1.ResourceCPU: q("2")}},
		"request above limit": {Requests: corev1.ResourceList{corev1.ResourceMemory: q("128Mi")}, Limits: corev1.ResourceList{corev1.ResourceMemory: q("64Mi")}},
	} {
		if err := checkBounds(r, b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFitLimitRanges(t *testing.T) {
	t.Parallel()
	lr := func(item corev1.LimitRangeItem) []corev1.LimitRange {
		item.Type = corev1.LimitTypeContainer
		return []corev1.LimitRange{{Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{item, {Type: corev1.LimitTypePod, Min: corev1.ResourceList{corev1.ResourceMemory: q("1Gi")}}}}}}
	}
	base := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: q("10m"), corev1.ResourceMemory: q("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: q("128Mi")},
	}
	tests := []struct {
		name   string
		ranges []corev1.LimitRange
		want   map[string]string // requests.cpu, requests.memory, limits.cpu, limits.memory
	}{
		{"none", nil, map[string]string{"requests.cpu": "10m", "requests.memory": "32Mi", "limits.cpu": "0", "limits.memory": "128Mi"}},
		{"minimums raise requests and need limits", lr(corev1.LimitRangeItem{Min: corev1.ResourceList{corev1.ResourceCPU: q("20m"), corev1.ResourceMemory: q("48Mi")}}),
			map[string]string{"requests.cpu": "20m", "requests.memory": "48Mi", "limits.cpu": "20m", "limits.memory": "128Mi"}},
		{"a minimum's limit is the default limit", lr(corev1.LimitRangeItem{Min: corev1.ResourceList{corev1.ResourceCPU: q("20m")}, Default: corev1.ResourceList{corev1.ResourceCPU: q("200m")}}),
			map[string]string{"requests.cpu": "20m", "requests.memory": "32Mi", "limits.cpu": "200m", "limits.memory": "128Mi"}},
		{"maximums lower limits and requests", lr(corev1.LimitRangeItem{Max: corev1.ResourceList{corev1.ResourceMemory: q("24Mi"), corev1.ResourceCPU: q("500m")}}),
			map[string]string{"requests.cpu": "10m", "requests.memory": "24Mi", "limits.cpu": "500m", "limits.memory": "24Mi"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := fitLimitRanges(base, tc.ranges)
			have := map[string]string{
				"requests.cpu": got.Requests.Cpu().String(), "requests.memory": got.Requests.Memory().String(),
				"limits.cpu": got.Limits.Cpu().String(), "limits.memory": got.Limits.Memory().String(),
			}
			for k, v := range tc.want {
				if have[k] != v {
					t.Errorf("%s = %s, want %s (all: %v)", k, have[k], v, have)
				}
			}
			if base.Requests.Cpu().String() != "10m" {
				t.Error("the input was changed")
			}
		})
	}
}

func TestProtectedNamespaces(t *testing.T) {
	t.Parallel()
	ing := func(ns, enabled string) networkingv1.Ingress {
		i := networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Annotations: map[string]string{}}}
		if enabled != "-" {
			i.Annotations[AnnEnabled] = enabled
		}
		return i
	}
	nsl := func(name, injection string) corev1.Namespace {
		return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{NamespaceInjectionLabel: injection}}}
	}
	got := protectedNamespaces(
		[]networkingv1.Ingress{ing("shop", "true"), ing("off", "false"), ing("none", "-"), ing("typo", "yes"), ing("kube-system", "true"), ing("gatehouse-system", "true"), ing("opted-out", "true")},
		[]corev1.Namespace{nsl("labelled", "enabled"), nsl("opted-out", "disabled")},
		[]string{"routes"}, "gatehouse-system")
	want := []string{"labelled", "routes", "shop", "typo"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("protectedNamespaces = %q, want %q", got, want)
	}
}

func TestSetNamespaceNames(t *testing.T) {
	t.Parallel()
	sel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: NamespaceNameLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"}},
		{Key: "team", Operator: metav1.LabelSelectorOpExists},
	}}
	up := setNamespaceNames(sel, nil)
	if !up.changed || len(sel.MatchExpressions) != 3 || sel.MatchExpressions[2].Values[0] != NoNamespace {
		t.Fatalf("missing requirement not added with the placeholder: %+v", sel)
	}
	if len(up.rest.MatchExpressions) != 2 {
		t.Errorf("the rest kept the owned requirement: %+v", up.rest)
	}
	if up := setNamespaceNames(sel, []string{"a", "b"}); !up.changed || strings.Join(sel.MatchExpressions[2].Values, ",") != "a,b" {
		t.Errorf("names not set: %+v", sel)
	}
	if up := setNamespaceNames(sel, []string{"a", "b"}); up.changed {
		t.Error("an unchanged list reported a change")
	}
	if sel.MatchExpressions[0].Values[0] != "kube-system" || sel.MatchExpressions[1].Key != "team" {
		t.Errorf("other requirements changed: %+v", sel)
	}
}

func TestProviderAllows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		allowed []string
		ns      string
		want    bool
	}{
		{nil, "shop", false}, // none unless listed
		{[]string{"*"}, "shop", true},
		{[]string{"shop", "billing"}, "shop", true},
		{[]string{"billing"}, "shop", false},
	} {
		if got := (&Provider{AllowedNamespaces: tc.allowed}).Allows(tc.ns); got != tc.want {
			t.Errorf("allowedNamespaces %q allows %s = %v, want %v", tc.allowed, tc.ns, got, tc.want)
		}
	}
}

// TestLongNameRefused: a front door whose name cannot be a label value is
// refused (and so fails closed) rather than left without a Secret.
func TestLongNameRefused(t *testing.T) {
	t.Parallel()
	file, err := ParseFile([]byte("providers:\n  - {name: default, issuerURL: 'https://login.example.com', clientID: c, allowedNamespaces: ['*']}\ndefaults: {provider: default}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &resolver{reader: newMemReader(nil), apiReader: newMemReader(nil), file: file, image: "gatehouse:test"}
	name := strings.Repeat("a", 64)
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: map[string]string{AnnEnabled: "true"}},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "shop.example.com"}}}}
	res, err := r.resolve(t.Context(), frontendFromIngress(ing))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Enabled || !res.Blocked || len(res.Problems) == 0 || !strings.Contains(res.Problems[0].Message, "63 characters") {
		t.Errorf("resolve(%d-character name) = %+v, want refused", len(name), res)
	}
}
