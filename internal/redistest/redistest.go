// Package redistest runs real redis-server processes on 127.0.0.1 for
// tests: a standalone server that a test can kill and restart, and a Redis
// Cluster of three masters. It fails the test, with the command to install
// it, when redis-server is missing.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	Addr string
	dir  string
	args []string
	cmd  *exec.Cmd
}

// Start runs a standalone redis-server on a free loopback port, stopped
// when the test ends. extra are additional redis-server arguments.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), Addr: freeAddr(t)}
	_, port, _ := net.SplitHostPort(s.Addr)
	s.args = append([]string{
		"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--protected-mode", "no",
	}, extra...)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// URL returns redis://<addr>/0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

func (s *Server) start() {
	s.t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatalf("redis-server is not installed: apt-get install -y redis-server (.ci/run does it)")
	}
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Dir = s.dir
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	waitPing(s.t, s.Addr)
}

// Kill stops the server at once (SIGKILL, by pid), as a crash would.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same address (empty).
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Cluster is a Redis Cluster of three masters without replicas.
type Cluster struct {
	Nodes []*Server
}

// StartCluster runs three cluster-enabled servers and joins them.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{}
	var addrs []string
	for range 3 {
		n := Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli is not installed: apt-get install -y redis-tools")
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.Nodes {
		for {
			out, _ := exec.Command(cli, "-h", "127.0.0.1", "-p", port(n.Addr), "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ready: %s", out)
			}
			time.Sleep(50 * time.Millisecond) //nolint:forbidigo // polling a real server
		}
	}
	return c
}

// URL returns a cluster URL: the first node, the others as addr
// parameters.
func (c *Cluster) URL() string {
	u := "redis://" + c.Nodes[0].Addr + "?cluster=true"
	for _, n := range c.Nodes[1:] {
		u += "&addr=" + n.Addr
	}
	return u
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func freeAddr(t testing.TB) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		// Cluster bus ports are port+10000; keep them in range.
		if p, _ := strconv.Atoi(port(addr)); p+10000 < 65536 {
			return addr
		}
	}
	t.Fatal("no free port below 55536")
	return ""
}

// waitPing waits until the server answers PING with PONG.
func waitPing(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			fmt.Fprint(conn, "PING\r\n")
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			_ = conn.Close()
			if strings.HasPrefix(line, "+PONG") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) //nolint:forbidigo // polling a real server
	}
	t.Fatalf("redis-server on %s did not answer within 10s", addr)
}
