package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the bench started. stop ends it by its pid.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logs    *tailBuffer
	started time.Time // just before fork and exec

	done    chan struct{} // closed once the process has been reaped
	waitErr error         // set before done is closed
	once    sync.Once
	stopErr error
}

// startProc starts path with args and env; its output goes to a buffer
// that error messages quote.
func startProc(name, path string, args, env []string) (*proc, error) {
	p := &proc{name: name, logs: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	// If the bench itself is killed, take the child with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// failure wraps err with how the process ended (if it did) and the tail of
// its output.
func (p *proc) failure(err error) error {
	if gone, werr := p.exited(); gone {
		err = fmt.Errorf("%w (%s exited: %w)", err, p.name, werr)
	}
	if out := strings.TrimSpace(p.logs.String()); out != "" {
		err = fmt.Errorf("%w; %s output:\n%s", err, p.name, out)
	}
	return err
}

// stop sends SIGTERM to the process and waits up to 5s for it, then kills
// it. It is safe to call more than once.
func (p *proc) stop() error {
	p.once.Do(func() {
		if gone, _ := p.exited(); gone {
			return
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = fmt.Errorf("stop %s (pid %d): %w", p.name, p.pid(), err)
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.stopErr = fmt.Errorf("stop %s (pid %d): still running 5s after SIGTERM; killed", p.name, p.pid())
		}
	})
	return p.stopErr
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// cpuTicks returns the user plus system CPU time of pid so far, in clock
// ticks (proc(5): fields 14 and 15 of /proc/<pid>/stat).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name, want at least 13", pid, len(f))
	}
	// f[0] is field 3 (state), so field 14 is f[11] and field 15 f[12].
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return utime + stime, nil
}

// memKiB returns a "Vm..." line of /proc/<pid>/status, in KiB.
func memKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v, _ := strings.CutSuffix(strings.TrimSpace(rest), " kB")
		return strconv.ParseInt(v, 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// clockTicks returns the kernel's clock ticks a second (getconf CLK_TCK),
// the unit of /proc/<pid>/stat CPU times; 100 when getconf is missing.
func clockTicks(ctx context.Context) int64 {
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
}

// cpuModel names the CPUs the bench may use for the report, e.g.
// "2 × AMD EPYC 7B13". The count is the affinity mask's, not
// /proc/cpuinfo's, which lists the host's CPUs inside a container.
func cpuModel() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d × %s", runtime.NumCPU(), model)
}

// freeAddr returns a loopback address nothing listens on right now. Another
// process could take it before the proxy binds it; on a machine given to
// the bench that does not happen.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// loadAverage is the one-minute load average, which tells a reader whether
// other work shared the machine with the bench.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(b), " ")
	return first
}
