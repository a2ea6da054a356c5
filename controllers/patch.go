package controllers

import (
	"fmt"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// injectionPatch is the JSON patch that turns orig into mutated, where
// mutated is orig after inject: operations for exactly what inject adds or
// rewrites (the sidecar, its volume, its annotations, the taken-over port
// name and the probes that used it), addressed by path. Everything else in
// the Pod as the API server sent it, fields newer than the compiled API
// types included, is left as it was.
func injectionPatch(orig, mutated *corev1.Pod) []jsonpatch.JsonPatchOperation {
	var ops []jsonpatch.JsonPatchOperation
	add := func(path string, v any) {
		ops = append(ops, jsonpatch.NewOperation("add", path, v))
	}
	replace := func(path string, v any) {
		ops = append(ops, jsonpatch.NewOperation("replace", path, v))
	}

	// Annotations.
	if len(orig.Annotations) == 0 {
		added := map[string]string{}
		for k, v := range mutated.Annotations {
			added[k] = v
		}
		add("/metadata/annotations", added)
	} else {
		for k, v := range mutated.Annotations {
			if old, ok := orig.Annotations[k]; !ok {
				add("/metadata/annotations/"+escape(k), v)
			} else if old != v {
				replace("/metadata/annotations/"+escape(k), v)
			}
		}
	}

	// The sidecar goes first among the init containers, so that it starts
	// before the others that might call the app.
	if len(orig.Spec.InitContainers) == 0 {
		add("/spec/initContainers", mutated.Spec.InitContainers)
	} else {
		add("/spec/initContainers/0", mutated.Spec.InitContainers[0])
	}
	// Its volumes (the Secret, and in broker mode the token) go last.
	if len(orig.Spec.Volumes) == 0 {
		add("/spec/volumes", mutated.Spec.Volumes)
	} else {
		for _, v := range mutated.Spec.Volumes[len(orig.Spec.Volumes):] {
			add("/spec/volumes/-", v)
		}
	}

	if orig.Spec.ServiceAccountName == "" && mutated.Spec.ServiceAccountName != "" {
		add("/spec/serviceAccountName", mutated.Spec.ServiceAccountName)
	}

	// The app containers: the taken-over port loses its name, and probes
	// and lifecycle hooks that used the name get the number.
	for ci := range orig.Spec.Containers {
		o, m := &orig.Spec.Containers[ci], &mutated.Spec.Containers[ci]
		base := fmt.Sprintf("/spec/containers/%d", ci)
		for pi := range o.Ports {
			if o.Ports[pi].Name != "" && m.Ports[pi].Name == "" {
				ops = append(ops, jsonpatch.NewOperation("remove", fmt.Sprintf("%s/ports/%d/name", base, pi), nil))
			}
		}
		var handlers []handlerPair
		for _, p := range []struct {
			name string
			o, m *corev1.Probe
		}{{"livenessProbe", o.LivenessProbe, m.LivenessProbe}, {"readinessProbe", o.ReadinessProbe, m.ReadinessProbe}, {"startupProbe", o.StartupProbe, m.StartupProbe}} {
			if p.o != nil {
				handlers = append(handlers, handlerPair{base + "/" + p.name, &p.o.ProbeHandler, &p.m.ProbeHandler})
			}
		}
		handlers = append(handlers, rewrittenHooks(o, m, base)...)
		for _, h := range handlers {
			if h.o.HTTPGet != nil && h.o.HTTPGet.Port != h.m.HTTPGet.Port {
				replace(h.path+"/httpGet/port", portValue(h.m.HTTPGet.Port))
			}
			if h.o.TCPSocket != nil && h.o.TCPSocket.Port != h.m.TCPSocket.Port {
				replace(h.path+"/tcpSocket/port", portValue(h.m.TCPSocket.Port))
			}
		}
	}
	return ops
}

// handlerPair is a probe or hook handler before and after injection, at
// path.
type handlerPair struct {
	path string
	o, m *corev1.ProbeHandler
}

// rewrittenHooks pairs the lifecycle hooks of a container before and after
// injection, as probe handlers (the fields inject rewrites).
func rewrittenHooks(o, m *corev1.Container, base string) []handlerPair {
	var out []handlerPair
	if o.Lifecycle == nil {
		return nil
	}
	for _, h := range []struct {
		name string
		o, m *corev1.LifecycleHandler
	}{{"postStart", o.Lifecycle.PostStart, m.Lifecycle.PostStart}, {"preStop", o.Lifecycle.PreStop, m.Lifecycle.PreStop}} {
		if h.o == nil {
			continue
		}
		out = append(out, handlerPair{base + "/lifecycle/" + h.name, &corev1.ProbeHandler{HTTPGet: h.o.HTTPGet, TCPSocket: h.o.TCPSocket}, &corev1.ProbeHandler{HTTPGet: h.m.HTTPGet, TCPSocket: h.m.TCPSocket}})
	}
	return out
}

func portValue(p intstr.IntOrString) any {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	return p.StrVal
}

// escape makes a map key one JSON-pointer token (RFC 6901 section 4).
func escape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}
