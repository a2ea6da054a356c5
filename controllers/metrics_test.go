package controllers_test

import (
	"testing"

	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/intstr"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// TestRuntimeMetricsExist: the controller-runtime and client-go metrics
// that the chart's dashboard and alerts use are in the registry of a
// running manager once it has reconciled and admitted something.
func TestRuntimeMetricsExist(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	create(t, ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app"))
	create(t, deployment(ns, "app", 1, "http"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		families, err := crmetrics.Registry.Gather()
		g.Expect(err).NotTo(gomega.HaveOccurred())
		var names []string
		for _, f := range families {
			names = append(names, f.GetName())
		}
		g.Expect(names).To(gomega.ContainElements(controllers.RuntimeMetrics))
		for _, m := range controllers.ControllerMetrics() {
			if m.Labels == nil {
				g.Expect(names).To(gomega.ContainElement(m.Name))
			}
		}
	}).WithTimeout(2 * wait).Should(gomega.Succeed())
}
