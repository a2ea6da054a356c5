package controllers

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestTrimPodKeepsWhatIsRead: every question the reconciler asks of a
// cached Pod has the same answer for the trimmed Pod as for the full one.
func TestTrimPodKeepsWhatIsRead(t *testing.T) {
	t.Parallel()
	now := metav1.Now()
	full := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1", Namespace: "shop", UID: "u1", ResourceVersion: "7", CreationTimestamp: now,
			Labels:          map[string]string{"app": "web", "pod-template-hash": "abc"},
			Annotations:     map[string]string{"kubectl.kubernetes.io/restartedAt": "x", "prometheus.io/scrape": "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc", UID: "rs1", Controller: ptr.To(true)}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}},
		},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "migrate", Image: "migrate:1", Args: []string{"up"}}},
			Containers: []corev1.Container{{
				Name: "app", Image: "web:1", Env: []corev1.EnvVar{{Name: "BIG", Value: "x"}},
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9090}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}},
			}},
			Volumes: []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}},
	}
	spec := testSpec(SecretMountPath)
	spec.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("16Mi")}}
	if !inject(full, spec, "http") {
		t.Fatal("inject changed nothing")
	}
	obj, err := trimPod(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	trimmed := obj.(*corev1.Pod)

	other := spec
	other.ClientID = "someone-else"
	other.Image = "gatehouse:next"
	for name, got := range map[string][2]any{
		"compare":         {spec.compare(full, "http"), spec.compare(trimmed, "http")},
		"compare other":   {other.compare(full, "http"), other.compare(trimmed, "http")},
		"sameCommand":     {spec.sameCommand(full, &full.Spec.InitContainers[0]), spec.sameCommand(trimmed, &trimmed.Spec.InitContainers[0])},
		"hasPortName":     {hasPortName(full, "http"), hasPortName(trimmed, "http")},
		"mountsSecret":    {mountsSecret(full, secretName(spec.Ingress)), mountsSecret(trimmed, secretName(spec.Ingress))},
		"live":            {live(full), live(trimmed)},
		"podReady":        {podReady(full), podReady(trimmed)},
		"controller":      {metav1.GetControllerOf(full).UID, metav1.GetControllerOf(trimmed).UID},
		"labels":          {full.Labels, trimmed.Labels},
		"ingress":         {full.Annotations[PodAnnIngress], trimmed.Annotations[PodAnnIngress]},
		"hostNetwork":     {full.Spec.HostNetwork, trimmed.Spec.HostNetwork},
		"created":         {full.CreationTimestamp, trimmed.CreationTimestamp},
		"indexIngress":    {podIngress(full), podIngress(trimmed)},
		"indexSecret":     {podSecrets(full), podSecrets(trimmed)},
		"indexOwner":      {podOwner(full), podOwner(trimmed)},
		"has sidecar":     {slices.ContainsFunc(full.Spec.InitContainers, isSidecar), slices.ContainsFunc(trimmed.Spec.InitContainers, isSidecar)},
		"resourceVersion": {full.ResourceVersion, trimmed.ResourceVersion},
	} {
		if diff := cmp.Diff(got[0], got[1]); diff != "" {
			t.Errorf("%s differs for the trimmed Pod (-full +trimmed):\n%s", name, diff)
		}
	}
	if spec.compare(trimmed, "http") != sidecarCurrent || other.compare(trimmed, "http") != sidecarOutdated {
		t.Errorf("compare of the trimmed Pod: %v, %v", spec.compare(trimmed, "http"), other.compare(trimmed, "http"))
	}
	if len(trimmed.ManagedFields) != 0 || len(trimmed.Spec.Containers[0].Env) != 0 || trimmed.Annotations["prometheus.io/scrape"] != "" || len(trimmed.Spec.InitContainers) != 1 {
		t.Errorf("trimmed Pod keeps what is never read: %+v", trimmed)
	}
}

func isSidecar(c corev1.Container) bool { return c.Name == SidecarName }

func TestKeepSecretData(t *testing.T) {
	t.Parallel()
	keep := keepSecretData([]string{"gatehouse-oidc"}, "gatehouse-broker-tls")
	for _, tc := range []struct {
		s    *corev1.Secret
		kept bool
	}{
		{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-oidc"}, Data: map[string][]byte{"k": []byte("v")}}, true},
		{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-app", Labels: map[string]string{SecretLabelIngress: "app"}}, Data: map[string][]byte{"k": []byte("v")}}, true},
		{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sh.helm.release.v1.gatehouse.v3"}, Data: map[string][]byte{"release": []byte("big")}}, false},
	} {
		out, err := keep(tc.s)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.(*corev1.Secret).Data != nil; got != tc.kept {
			t.Errorf("%s: data kept %v, want %v", tc.s.Name, got, tc.kept)
		}
	}
	// Of the broker's certificate, the CA alone: the controller copies it
	// to brokered namespaces and never needs the broker's key.
	out, err := keep(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-broker-tls"}, Data: map[string][]byte{
		"ca.crt": []byte("ca"), "tls.crt": []byte("crt"), "tls.key": []byte("key"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := out.(*corev1.Secret).Data; len(got) != 1 || string(got["ca.crt"]) != "ca" {
		t.Errorf("broker certificate Secret kept %v, want only ca.crt", got)
	}
}

func TestProviderSecretNames(t *testing.T) {
	t.Parallel()
	file, err := ParseFile([]byte(`
providers:
  - {name: a, issuerURL: 'https://login.example.com', clientID: a, clientSecretRef: {name: oidc, key: k}}
  - {name: b, issuerURL: 'https://login.example.com', clientID: b, clientSecretRef: {name: oidc, key: other},
     sessionStore: {redisURL: 'redis://r:6379/0', passwordSecretRef: {name: redis, key: p}}}
  - {name: c, issuerURL: 'https://login.example.com', clientID: c}
  - {name: d, issuerURL: 'https://login.example.com', clientID: d, clientKeyRef: {name: signing-key, key: tls.key}, clientSecretMode: broker}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := providerSecretNames(file); !slices.Equal(got, []string{"oidc", "redis"}) {
		t.Errorf("providerSecretNames = %v", got)
	}
	if got := providersUsing(file, "oidc"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("providersUsing(oidc) = %v", got)
	}
	if got := providersUsing(file, "redis"); !slices.Equal(got, []string{"b"}) {
		t.Errorf("providersUsing(redis) = %v", got)
	}
	// Only the broker reads a private key: the controller neither keeps
	// its data nor reconciles on its change.
	if got := providersUsing(file, "signing-key"); len(got) != 0 {
		t.Errorf("providersUsing(signing-key) = %v, want none", got)
	}
}

func TestControllerMetricsDescribed(t *testing.T) {
	t.Parallel()
	docs := ControllerMetrics()
	if len(docs) < 9 {
		t.Fatalf("only %d metrics described: %+v", len(docs), docs)
	}
	for _, d := range docs {
		if d.Name == "" || d.Help == "" {
			t.Errorf("metric without name or help: %+v", d)
		}
	}
}
