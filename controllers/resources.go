package controllers

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// resourceKeys are the keys gatehouse.dev/sidecar-resources takes.
var resourceKeys = map[string]struct {
	limit bool
	name  corev1.ResourceName
}{
	"requests.cpu":    {false, corev1.ResourceCPU},
	"requests.memory": {false, corev1.ResourceMemory},
	"limits.cpu":      {true, corev1.ResourceCPU},
	"limits.memory":   {true, corev1.ResourceMemory},
}

// parseResources reads a gatehouse.dev/sidecar-resources value:
// comma-separated key=quantity pairs, keys requests.cpu, requests.memory,
// limits.cpu and limits.memory ("requests.memory=48Mi,limits.memory=128Mi").
func parseResources(v string) (corev1.ResourceRequirements, error) {
	var out corev1.ResourceRequirements
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, q, ok := strings.Cut(item, "=")
		k, q = strings.TrimSpace(k), strings.TrimSpace(q)
		key, known := resourceKeys[k]
		if !ok || !known {
			return out, fmt.Errorf("%q is not key=quantity with a key of requests.cpu, requests.memory, limits.cpu, limits.memory", item)
		}
		quantity, err := resource.ParseQuantity(q)
		if err != nil || quantity.Sign() <= 0 {
			return out, fmt.Errorf("%s: %q is not a positive quantity", k, q)
		}
		list := &out.Requests
		if key.limit {
			list = &out.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[key.name] = quantity
	}
	return out, nil
}

// overlay returns base with every quantity that top sets replaced.
func overlay(base, top corev1.ResourceRequirements) corev1.ResourceRequirements {
	out := *base.DeepCopy()
	for _, pair := range []struct {
		dst *corev1.ResourceList
		src corev1.ResourceList
	}{{&out.Requests, top.Requests}, {&out.Limits, top.Limits}} {
		for name, q := range pair.src {
			if *pair.dst == nil {
				*pair.dst = corev1.ResourceList{}
			}
			(*pair.dst)[name] = q
		}
	}
	return out
}

// checkBounds reports quantities outside the platform team's bounds, and a
// request above its limit.
func checkBounds(r corev1.ResourceRequirements, b *ResourceBounds) error {
	for _, pair := range []struct {
		what string
		list corev1.ResourceList
	}{{"requests", r.Requests}, {"limits", r.Limits}} {
		for name, q := range pair.list {
			if b != nil {
				if lo, ok := b.Min[name]; ok && q.Cmp(lo) < 0 {
					return fmt.Errorf("%s.%s %s is below the platform's minimum %s", pair.what, name, q.String(), lo.String())
				}
				if hi, ok := b.Max[name]; ok && q.Cmp(hi) > 0 {
					return fmt.Errorf("%s.%s %s is above the platform's maximum %s", pair.what, name, q.String(), hi.String())
				}
			}
		}
	}
	for name, req := range r.Requests {
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			return fmt.Errorf("requests.%s %s is above limits.%s %s", name, req.String(), name, lim.String())
		}
	}
	return nil
}

// sidecarResources are the sidecar's resources for fe: the chart's
// defaults, then the namespace's gatehouse.dev/sidecar-resources, then the
// front door's, each within the platform team's bounds.
func (r *resolver) sidecarResources(ctx context.Context, fe frontend, pol Policy) (corev1.ResourceRequirements, error) {
	out := r.file.Defaults.Sidecar.Resources
	var ns corev1.Namespace
	if err := r.reader.Get(ctx, client.ObjectKey{Name: fe.Namespace}, &ns); err == nil {
		if v, ok := ns.Annotations[AnnSidecarResources]; ok {
			nsDefault, err := parseResources(v)
			if err != nil {
				return out, fmt.Errorf("%w %q on Namespace %s: %w", errInvalidAnnotation, AnnSidecarResources, fe.Namespace, err)
			}
			if err := checkBounds(overlay(out, nsDefault), r.file.Defaults.Sidecar.ResourceBounds); err != nil {
				return out, fmt.Errorf("%w %q on Namespace %s: %w", errInvalidAnnotation, AnnSidecarResources, fe.Namespace, err)
			}
			out = overlay(out, nsDefault)
		}
	} else if client.IgnoreNotFound(err) != nil {
		return out, err
	}
	if pol.SidecarResources != nil {
		out = overlay(out, *pol.SidecarResources)
		if err := checkBounds(out, r.file.Defaults.Sidecar.ResourceBounds); err != nil {
			return out, fmt.Errorf("%w %q: %w", errInvalidAnnotation, AnnSidecarResources, err)
		}
	}
	return out, nil
}

// fitLimitRanges raises and lowers the sidecar's resources into what the
// namespace's LimitRanges admit for a container: at least each minimum
// (request and limit), at most each maximum (limit, and request), and a
// limit where a minimum or maximum needs one (the LimitRange's default
// limit, else the bound itself). The LimitRanger plugin does not default
// containers a webhook adds after it, so without this a namespace with a
// LimitRange would refuse every injected Pod. maxLimitRequestRatio is not
// handled: the README says to keep it above the sidecar's own ratio.
func fitLimitRanges(res corev1.ResourceRequirements, ranges []corev1.LimitRange) corev1.ResourceRequirements {
	out := *res.DeepCopy()
	set := func(list *corev1.ResourceList, name corev1.ResourceName, q resource.Quantity) {
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
	}
	for _, lr := range ranges {
		for _, item := range lr.Spec.Limits {
			if item.Type != corev1.LimitTypeContainer {
				continue
			}
			for name, lo := range item.Min {
				if q, ok := out.Requests[name]; !ok || q.Cmp(lo) < 0 {
					set(&out.Requests, name, lo)
				}
				if q, ok := out.Limits[name]; !ok || q.Cmp(lo) < 0 {
					want := lo
					if d, ok := item.Default[name]; ok && d.Cmp(lo) >= 0 {
						want = d
					}
					if req := out.Requests[name]; req.Cmp(want) > 0 {
						want = req
					}
					set(&out.Limits, name, want)
				}
			}
			for name, hi := range item.Max {
				if q, had := out.Limits[name]; !had || q.Cmp(hi) > 0 {
					want := hi
					if d, ok := item.Default[name]; ok && !had && d.Cmp(hi) <= 0 {
						want = d
					}
					set(&out.Limits, name, want)
				}
				if q, ok := out.Requests[name]; ok && q.Cmp(hi) > 0 {
					set(&out.Requests, name, hi)
				}
			}
		}
	}
	// A request above its limit would be refused; the limit wins.
	for name, req := range out.Requests {
		if lim, ok := out.Limits[name]; ok && req.Cmp(lim) > 0 {
			out.Requests[name] = lim
		}
	}
	return out
}
