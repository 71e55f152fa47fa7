package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a child has to exit after SIGTERM before it is
// killed. The callers' own shutdown_grace (5 s in the template) fits in it.
const stopGrace = 10 * time.Second

// proc is one child process of the demo, its output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	// done is closed once the process has exited; err is then its exit error.
	done chan struct{}
	err  error
}

// procSpec says how to start a child.
type procSpec struct {
	name string
	path string
	args []string
	env  []string
	// stdout, when set, receives the child's standard output (also copied
	// to the log); otherwise it goes to the log only.
	stdout io.Writer
}

// start starts a child with its standard output and error in
// <logDir>/<name>.log. The child gets a process group of its own, so a
// Ctrl-C on the terminal reaches only the demo, which stops the children in
// order (dispatcher and callers before the observer, all before NATS).
func start(spec procSpec, logDir string) (*proc, error) {
	if _, err := os.Stat(spec.path); err != nil {
		return nil, fmt.Errorf("%s: %w (build it with make build, or point --bin at the binaries)", spec.name, err)
	}
	logPath := filepath.Join(logDir, spec.name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", spec.name, err)
	}
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Env = spec.env
	cmd.Stderr = f
	cmd.Stdout = f
	if spec.stdout != nil {
		cmd.Stdout = io.MultiWriter(spec.stdout, f)
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	p := &proc{name: spec.name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills. It returns whether the
// process had to be killed.
func (p *proc) stop(grace time.Duration) (killed bool) {
	if p.exited() {
		return false
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return true
}

// describe says how the process ended, for an error message.
func (p *proc) describe() string {
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return "exited with status 0"
	case errors.As(p.err, &ee):
		return ee.ProcessState.String() // "exit status 1", "signal: killed"
	}
	return p.err.Error()
}

// tail returns the last n lines of the process's log, indented.
func (p *proc) tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b bytes.Buffer
	for _, l := range lines {
		if l != "" {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return b.String()
}

// execCommand is a short-lived child (observer replay) whose output the demo
// reads itself.
func execCommand(ctx context.Context, path string, args, env []string, stdout, stderr io.Writer) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, stdout, stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = stopGrace
	return cmd
}
