// Package controlplane runs a local Kubernetes control plane for the demo
// and the tests that need a real API server: etcd and kube-apiserver
// (through envtest), and optionally kube-controller-manager, so that
// Deployments really make Pods. There is no scheduler and no kubelet: Pods
// stay Pending, which is all admission needs. The binaries come from
// hack/envtest-binaries.sh.
package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// DeploymentControllers are the kube-controller-manager loops that turn
// Deployments into Pods and clean up after them.
var DeploymentControllers = []string{"deployment-controller", "replicaset-controller", "garbage-collector-controller", "namespace-controller"}

// Options configure Start.
type Options struct {
	// Root is the repository root (where hack/ is).
	Root string
	// Progress receives the binaries build's progress.
	Progress io.Writer
	// Webhooks are installed with the control plane.
	Webhooks []*admissionv1.MutatingWebhookConfiguration
	// CRDPaths are directories or files of CRDs to install.
	CRDPaths []string
	// Controllers are the kube-controller-manager loops to run; without
	// any, kube-controller-manager does not run.
	Controllers []string
	// ControllerManagerFlags are extra kube-controller-manager flags.
	ControllerManagerFlags []string
}

// ControlPlane is a running local control plane.
type ControlPlane struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Dir holds kubeconfig files and logs; Stop removes it.
	Dir string

	// Env is the envtest environment (users, webhook serving options).
	Env *envtest.Environment

	kcm     *exec.Cmd
	kcmDone chan struct{}
}

// Binaries builds (once per machine) and returns the directory of the
// control plane binaries. A build that takes a while reports its time to
// progress every half minute.
func Binaries(root string, progress io.Writer) (string, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	progress = &lockedWriter{w: progress}
	cmd := exec.Command(filepath.Join(root, "hack", "envtest-binaries.sh"))
	cmd.Dir = root
	cmd.Stderr = progress
	done := make(chan struct{})
	defer close(done)
	go func() {
		start := time.Now()
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(progress, "    still building the control plane binaries (%s so far)\n", time.Since(start).Round(time.Second))
			}
		}
	}()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/envtest-binaries.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// lockedWriter lets the build's output and the progress ticker share one
// writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Start builds the binaries if needed and starts the control plane.
func Start(opts Options) (*ControlPlane, error) {
	assets, err := Binaries(opts.Root, opts.Progress)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gatehouse-controlplane-")
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{Dir: dir, Env: &envtest.Environment{
		BinaryAssetsDirectory: assets,
		WebhookInstallOptions: envtest.WebhookInstallOptions{MutatingWebhooks: opts.Webhooks},
	}}
	if len(opts.CRDPaths) > 0 {
		c.Env.CRDInstallOptions = envtest.CRDInstallOptions{Paths: opts.CRDPaths, ErrorIfPathMissing: true}
	}
	if c.Config, err = c.Env.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start kube-apiserver and etcd: %w", err)
	}
	if len(opts.Controllers) > 0 {
		if err := c.startControllerManager(opts.Controllers, opts.ControllerManagerFlags); err != nil {
			_ = c.Stop()
			return nil, fmt.Errorf("start kube-controller-manager: %w", err)
		}
	}
	return c, nil
}

// Kubeconfig writes a kubeconfig file for a new user of the API server and
// returns its path.
func (c *ControlPlane) Kubeconfig(name string, groups ...string) (string, error) {
	user, err := c.Env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return "", err
	}
	b, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, strings.NewReplacer(":", "-", "/", "-").Replace(name)+".kubeconfig")
	return path, os.WriteFile(path, b, 0o600)
}

func (c *ControlPlane) startControllerManager(controllers, flags []string) error {
	kubeconfig, err := c.Kubeconfig("kube-controller-manager", "system:masters")
	if err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(c.Dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
		"--v=0",
	}, flags...)
	c.kcm = exec.Command(filepath.Join(c.Env.BinaryAssetsDirectory, "kube-controller-manager"), args...)
	c.kcm.Stdout, c.kcm.Stderr = log, log
	c.kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.kcm.Start(); err != nil {
		_ = log.Close()
		return err
	}
	c.kcmDone = make(chan struct{})
	go func() {
		_ = c.kcm.Wait()
		_ = log.Close()
		close(c.kcmDone)
	}()
	return nil
}

// Stop ends kube-controller-manager, the API server and etcd, and removes
// Dir.
func (c *ControlPlane) Stop() error {
	var errs []error
	if c.kcmDone != nil {
		errs = append(errs, StopProcess(c.kcm.Process, c.kcmDone))
	}
	errs = append(errs, c.Env.Stop(), os.RemoveAll(c.Dir))
	return errors.Join(errs...)
}

// StopProcess sends SIGTERM to p and waits until done is closed (by the
// goroutine that waits for p); after ten seconds it kills p.
func StopProcess(p *os.Process, done <-chan struct{}) error {
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		err := p.Kill()
		<-done
		return err
	}
}

// GatewayAPICRDs are the Gateway API's standard-channel CRDs Gatehouse
// reads (GatewayClass, Gateway, HTTPRoute, ReferenceGrant), from the
// sigs.k8s.io/gateway-api module that go.mod pins, for Options.CRDPaths.
func GatewayAPICRDs(root string) ([]string, error) {
	// go mod download fetches the module when the cache lacks it (a fresh
	// machine), and names its directory either way.
	cmd := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/gateway-api")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("find the gateway-api module: %w", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return nil, fmt.Errorf("find the gateway-api module: no directory in %q", out)
	}
	dir := filepath.Join(mod.Dir, "config", "crd", "standard")
	var paths []string
	for _, kind := range []string{"gatewayclasses", "gateways", "httproutes", "referencegrants"} {
		paths = append(paths, filepath.Join(dir, "gateway.networking.k8s.io_"+kind+".yaml"))
	}
	return paths, nil
}
