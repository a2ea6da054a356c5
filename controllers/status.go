package controllers

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// IngressStatus is what gatehouse status shows for one Ingress: the
// Ingress, its Secret (with the controller's own view), its Pods and its
// Warning Events, read as a user with read access to the namespace would.
type IngressStatus struct {
	// Kind is Ingress or HTTPRoute; Namespace is where the Pods are (an
	// HTTPRoute with backends in several namespaces has a line for each).
	Kind            string
	Namespace, Name string
	// Protected is "yes", "no", "last-good" (an edit is refused, the last
	// good settings stay in force) or "refused" (new Pods are refused).
	Protected string
	// Why explains Protected when it is not "yes".
	Why      string
	Provider string
	Hosts    []string
	// Pods behind the Ingress's Services; Protected carry its sidecar,
	// Stale carry it with an older image or other resources.
	PodsProtected, PodsTotal, PodsStale int
	// Problem is the controller's last word on what is wrong, else the
	// newest Warning Event.
	Problem string
	Rollout string
}

// Status reads the state of the Ingresses and HTTPRoutes of namespace ns
// (every namespace when ns is empty), or of those named name. HTTPRoutes
// are left out where the Gateway API is not installed.
func Status(ctx context.Context, c client.Reader, ns, name string) ([]IngressStatus, error) {
	var ings networkingv1.IngressList
	if err := c.List(ctx, &ings, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("list ingresses: %w", err)
	}
	var out []IngressStatus
	for i := range ings.Items {
		ing := &ings.Items[i]
		if name != "" && ing.Name != name {
			continue
		}
		if name == "" && !hasGatehouseAnnotation(ing.Annotations) {
			continue
		}
		st, err := statusOf(ctx, c, frontendFromIngress(ing))
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	var routes gatewayv1.HTTPRouteList
	err := c.List(ctx, &routes, client.InNamespace(ns))
	switch {
	case meta.IsNoMatchError(err) || runtime.IsNotRegisteredError(err) || apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("list httproutes: %w", err)
	}
	r := &resolver{reader: c, routes: true}
	for i := range routes.Items {
		route := &routes.Items[i]
		if (name != "" && route.Name != name) || (name == "" && !hasGatehouseAnnotation(route.Annotations)) {
			continue
		}
		fronts, refused, err := r.frontendsOfRoute(ctx, route)
		if err != nil {
			return nil, err
		}
		for _, fe := range fronts {
			st, err := statusOf(ctx, c, fe)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
		if len(refused) > 0 {
			out = append(out, IngressStatus{Kind: KindHTTPRoute, Namespace: route.Namespace, Name: route.Name, Protected: "no",
				Why: "backends " + strings.Join(refused, ", ") + " need a ReferenceGrant", Provider: "-"})
		}
	}
	if name != "" && len(out) == 0 {
		return nil, fmt.Errorf("no Ingress or HTTPRoute %s in namespace %s", name, ns)
	}
	slices.SortFunc(out, func(a, b IngressStatus) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func hasGatehouseAnnotation(ann map[string]string) bool {
	for k := range ann {
		if strings.HasPrefix(k, AnnotationPrefix) {
			return true
		}
	}
	return false
}

func statusOf(ctx context.Context, c client.Reader, fe frontend) (IngressStatus, error) {
	st := IngressStatus{Kind: fe.Kind, Namespace: fe.Namespace, Name: fe.Name, Protected: "no"}
	if fe.Kind == KindHTTPRoute && fe.RouteNamespace != fe.Namespace {
		st.Name = fe.RouteNamespace + "/" + fe.Name
	}
	for _, h := range fe.Hosts {
		st.Hosts = append(st.Hosts, h.origin())
	}
	pol, perr := parsePolicy(fe.Annotations)
	switch {
	case pol.ProviderSecret != "":
		st.Provider = "secret/" + pol.ProviderSecret
	case pol.Provider != "":
		st.Provider = pol.Provider
	default:
		st.Provider = "(default)"
	}
	var secret corev1.Secret
	err := c.Get(ctx, client.ObjectKey{Namespace: fe.Namespace, Name: secretName(fe.Key)}, &secret)
	hasSecret := err == nil && secret.Labels[SecretLabelIngress] == fe.Key
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
		return st, fmt.Errorf("read secret: %w", err)
	}
	_, asked := fe.Annotations[AnnEnabled]
	switch {
	case !pol.Enabled && (!asked || perr == nil):
		st.Why = "gatehouse.dev/enabled is not \"true\""
	case hasSecret:
		st.Protected = "yes"
		switch s := secret.Annotations[SecretAnnState]; s {
		case "", "protected", "rolling-out":
		default:
			st.Protected = s
		}
		st.Problem = secret.Annotations[SecretAnnProblem]
		st.Rollout = secret.Annotations[SecretAnnRollout]
		if st.Protected == "last-good" {
			st.Why = "an edit is refused or conflicts; the last good settings stay in force"
		}
	default:
		st.Why = "the controller has not made its Secret (the settings were never good, or it is not running)"
	}

	// Pods behind the Ingress's Services.
	seen := map[string]bool{}
	for _, b := range fe.Backends {
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: fe.Namespace, Name: b.Name}, &svc); err != nil || len(svc.Spec.Selector) == 0 {
			continue
		}
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(fe.Namespace), client.MatchingLabels(svc.Spec.Selector)); err != nil {
			return st, fmt.Errorf("list pods: %w", err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if seen[p.Name] || !live(p) {
				continue
			}
			seen[p.Name] = true
			st.PodsTotal++
			if slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SidecarName }) {
				st.PodsProtected++
			}
		}
	}
	st.PodsStale, _ = strconv.Atoi(secret.Annotations[SecretAnnStalePods])

	if st.Problem == "" {
		var evs eventsv1.EventList
		evNS := fe.Namespace
		if fe.Kind == KindHTTPRoute {
			evNS = fe.RouteNamespace
		}
		if err := c.List(ctx, &evs, client.InNamespace(evNS)); err == nil {
			var newest *eventsv1.Event
			for i := range evs.Items {
				e := &evs.Items[i]
				if e.Type != corev1.EventTypeWarning || e.Regarding.Kind != fe.Kind || e.Regarding.Name != fe.Name {
					continue
				}
				if newest == nil || lastSeen(e).After(lastSeen(newest)) {
					newest = e
				}
			}
			if newest != nil {
				st.Problem = newest.Reason + ": " + newest.Note
			}
		}
	}
	return st, nil
}

func lastSeen(e *eventsv1.Event) time.Time {
	switch {
	case e.Series != nil:
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	default:
		return e.DeprecatedLastTimestamp.Time
	}
}

// WriteStatus prints statuses as a table, one Ingress a line.
func WriteStatus(w io.Writer, statuses []IngressStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tKIND\tNAME\tPROTECTED\tPROVIDER\tHOSTS\tPODS\tSTALE\tROLLOUT\tPROBLEM")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return strings.ReplaceAll(s, "\t", " ")
	}
	for _, s := range statuses {
		protected := s.Protected
		if s.Why != "" {
			protected += " (" + s.Why + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", s.Namespace, s.Kind, s.Name, protected, s.Provider,
			dash(strings.Join(s.Hosts, ",")), s.PodsProtected, s.PodsTotal, s.PodsStale, dash(s.Rollout), dash(s.Problem))
	}
	return tw.Flush()
}
