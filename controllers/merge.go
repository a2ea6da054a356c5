package controllers

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// member is one enabled front door in front of an app (a Service and the
// named port the sidecar takes over), with what the controller stored for
// it.
type member struct {
	fe  frontend
	res resolved
	// portName is the target port name of the backend this member reaches
	// the app through.
	portName string
	// hasSecret is true when its per-Ingress Secret exists, made at
	// secretCreated.
	hasSecret     bool
	secretCreated metav1.Time
	// lastGood is its own spec from that Secret, nil when none was stored.
	lastGood *sidecarSpec
}

// verdictKind is what the webhook does with a Pod of the app, and what the
// rollout aims for.
type verdictKind int

const (
	// verdictNone: no enabled front door; the Pod stays plain.
	verdictNone verdictKind = iota
	// verdictPending: the settings are good but no Secret exists yet; the
	// Pod starts plain and the rollout replaces it once the Secret is
	// there, so no Pod waits for a volume that does not exist.
	verdictPending
	// verdictInject: inject the merged current settings.
	verdictInject
	// verdictLastGood: the current settings are refused or conflict;
	// inject the last good spec.
	verdictLastGood
	// verdictDeny: front doors are meant to protect the app, but there
	// never was a good spec: refuse the Pod rather than start it
	// unprotected.
	verdictDeny
)

// outcome is the decision for one app.
type outcome struct {
	kind     verdictKind
	spec     sidecarSpec
	portName string
	// problem says why the current settings are not in force
	// (verdictLastGood, verdictDeny), and reason is its Event reason.
	problem string
	reason  string
}

// decide merges the front doors of one app. Front doors that agree on
// everything but their hosts are merged: one --redirect-url per host, and
// the oldest Secret among theirs, so that a front door added later never
// moves the Pods to another Secret. When any is refused or they
// disagree, the merged last good specs stay in force; only when there are
// none is the Pod refused. image is the sidecar image new Pods get, last
// good spec or not. decide reads nothing and changes nothing.
func decide(members []member, image string) outcome {
	if len(members) == 0 {
		return outcome{kind: verdictNone}
	}
	ms := slices.Clone(members)
	sort.SliceStable(ms, func(i, j int) bool {
		if !ms[i].fe.Created.Equal(&ms[j].fe.Created) {
			return ms[i].fe.Created.Before(&ms[j].fe.Created)
		}
		return ms[i].fe.Key < ms[j].fe.Key
	})
	problem, reason := "", ""
	first := ms[0]
	for _, m := range ms {
		switch {
		case m.res.Blocked:
			problem, reason = fmt.Sprintf("the settings of %s are refused (see its Warning Events)", m.fe.key()), ReasonInvalidAnnotation
		case m.portName != first.portName:
			problem, reason = fmt.Sprintf("%s and %s reach the app through different ports (%s, %s)", first.fe.key(), m.fe.key(), first.portName, m.portName), ReasonConflict
		case !sameSettings(m.res.Spec, first.res.Spec):
			problem, reason = fmt.Sprintf("%s and %s are in front of the same app with different settings; make them agree (only hosts may differ)", first.fe.key(), m.fe.key()), ReasonConflict
		case m.res.Spec.secure() != first.res.Spec.secure():
			// One sidecar's cookies are Secure (and __Host-) for every host
			// or for none: merging would drop Secure on the https hosts and
			// rename the cookie, logging everyone out.
			problem, reason = fmt.Sprintf("%s and %s are in front of the same app, one over https only and one not; cookies cannot be Secure for some hosts only, so give both TLS (or %s: https) or keep them apart", first.fe.key(), m.fe.key(), AnnExternalScheme), ReasonConflict
		}
		if problem != "" {
			break
		}
	}
	if problem == "" {
		specs := make([]sidecarSpec, len(ms))
		for i, m := range ms {
			specs[i] = m.res.Spec
		}
		spec := mergeSpecs(specs)
		bySecret := bySecretAge(ms)
		if !bySecret[0].hasSecret {
			return outcome{kind: verdictPending, spec: spec, portName: first.portName}
		}
		spec.Ingress = bySecret[0].fe.Key
		return outcome{kind: verdictInject, spec: spec, portName: first.portName}
	}
	var good []sidecarSpec
	port := ""
	for _, m := range bySecretAge(ms) {
		if m.lastGood == nil || !m.hasSecret || m.portName == "" {
			continue
		}
		if len(good) > 0 && (!sameSettings(*m.lastGood, good[0]) || m.portName != port) {
			continue
		}
		good = append(good, *m.lastGood)
		if port == "" {
			port = m.portName
		}
	}
	if len(good) == 0 {
		return outcome{kind: verdictDeny, problem: problem, reason: reason}
	}
	spec := mergeSpecs(good)
	spec.Image = image
	return outcome{kind: verdictLastGood, spec: spec, portName: port, problem: problem, reason: reason}
}

// bySecretAge orders members with a Secret first, the oldest Secret
// first; the order of ms breaks ties.
func bySecretAge(ms []member) []member {
	out := slices.Clone(ms)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].hasSecret != out[j].hasSecret {
			return out[i].hasSecret
		}
		return out[i].secretCreated.Before(&out[j].secretCreated)
	})
	return out
}

// mergeSpecs merges specs that agree on everything but their origins: the
// first one's settings and Secret, every origin once, sorted.
func mergeSpecs(specs []sidecarSpec) sidecarSpec {
	out := specs[0]
	var origins []string
	for _, s := range specs {
		for _, o := range s.Origins {
			if !slices.Contains(origins, o) {
				origins = append(origins, o)
			}
		}
	}
	sort.Strings(origins)
	out.Origins = origins
	return out
}

// sameSettings reports whether two front doors ask for the same sidecar,
// apart from their hosts and whose Secret it mounts.
func sameSettings(a, b sidecarSpec) bool {
	a.Ingress, b.Ingress = "", ""
	a.Origins, b.Origins = nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// lastGoodOf reads the last good spec a per-Ingress Secret holds.
func lastGoodOf(s *corev1.Secret) *sidecarSpec {
	raw, ok := s.Data[SecretKeyLastGood]
	if !ok {
		return nil
	}
	var spec sidecarSpec
	if err := json.Unmarshal(raw, &spec); err != nil || spec.Ingress == "" || len(spec.Origins) == 0 {
		return nil
	}
	return &spec
}
