package stack

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors a Proc's methods wrap.
var (
	// ErrKilled: the process did not stop within its grace after SIGTERM and
	// was killed.
	ErrKilled = errors.New("killed")
	// ErrExited: the process exited before what was waited for happened.
	ErrExited = errors.New("process exited")
)

// logPoll is how often WaitLog reads a log again.
const logPoll = 50 * time.Millisecond

// Spec says how to start a process.
type Spec struct {
	// Name names the process in messages and, in a Stack, its log file:
	// one name per process running at once ("caller-1", "observer-2").
	Name string
	// Path is the binary; in a Stack a relative one is found in its Bin.
	Path string
	Args []string
	// Env is the environment; nil is CleanEnv() (in a Stack, its Env).
	Env []string
	// Dir is the working directory; empty is this process's.
	Dir string
	// Log is the file the standard output and error are appended to; in a
	// Stack, empty is <LogDir>/<Name>.log.
	Log string
	// Stdout, when set, receives the standard output instead of the log: a
	// command's data, such as a JSON summary, apart from what it logs. With
	// StdoutToLog the log gets a copy too.
	Stdout      io.Writer
	StdoutToLog bool
	// DeathSignal is what the kernel sends the process should this one die
	// without stopping it (Linux only): SIGKILL when zero; SIGTERM lets it
	// shut down cleanly.
	DeathSignal syscall.Signal
}

// Proc is a running (or exited) child process. Its memory and CPU are
// sampled while it runs (see Stats).
type Proc struct {
	Name string
	spec Spec
	cmd  *exec.Cmd
	// offset is where this process's output starts in its log, which a
	// restart appends to.
	offset int64
	// end is where it ends once the process has exited (-1 before).
	end  int64
	done chan struct{}
	err  error // the exit error, set before done is closed

	mu    sync.Mutex
	stats Stats
}

// Start starts a process in a process group of its own, so that a Ctrl-C on
// the terminal reaches only this process, which stops its children in
// order, and so that what the child starts can be killed with it
// (KillGroup). The process is killed (Spec.DeathSignal) should this one die
// without stopping it. Spec.Log must be set; Stack.Spawn sets it.
func Start(spec Spec) (*Proc, error) {
	if spec.Log == "" {
		return nil, fmt.Errorf("start %s: no log file", spec.Name)
	}
	f, err := os.OpenFile(spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", spec.Name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s log: %w", spec.Name, err)
	}
	env := spec.Env
	if env == nil {
		env = CleanEnv()
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir, cmd.Env = spec.Dir, env
	cmd.Stdout, cmd.Stderr = f, f
	if spec.Stdout != nil {
		cmd.Stdout = spec.Stdout
		if spec.StdoutToLog {
			cmd.Stdout = io.MultiWriter(spec.Stdout, f)
		}
		// An orphaned grandchild holding the output pipe must not keep
		// Wait waiting.
		cmd.WaitDelay = 2 * time.Second
	}
	cmd.SysProcAttr = sysProcAttr(cmp.Or(spec.DeathSignal, syscall.SIGKILL))
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Proc{Name: spec.Name, spec: spec, cmd: cmd, offset: fi.Size(), end: -1, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if fi, err := f.Stat(); err == nil {
			p.end = fi.Size()
		}
		f.Close()
		close(p.done)
	}()
	go p.sample()
	return p, nil
}

// Command is a short-lived child whose output the caller reads itself (a
// report, a replay), with the attributes of Start: its own process group,
// killed should this process die. ctx ends it as exec.CommandContext does,
// with grace before the pipes are closed.
func Command(ctx context.Context, grace time.Duration, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = sysProcAttr(syscall.SIGTERM)
	cmd.WaitDelay = grace
	return cmd
}

// Pid is the process id; with Start's own process group, also its group id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file the output goes to.
func (p *Proc) LogPath() string { return p.spec.Log }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the exit error once Done is closed (nil for status 0), and nil
// before.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// State is how the process ended, nil while it runs.
func (p *Proc) State() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.cmd.ProcessState
}

// ExitCode is the exit status, -1 while it runs or when a signal ended it.
func (p *Proc) ExitCode() int {
	if st := p.State(); st != nil {
		return st.ExitCode()
	}
	return -1
}

// Describe says how the process ended, for a message: "exited with status
// 0", "exit status 1", "signal: killed"; "running" while it runs.
func (p *Proc) Describe() string {
	if !p.Exited() {
		return "running"
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return "exited with status 0"
	case errors.As(p.err, &ee):
		return ee.ProcessState.String()
	}
	return p.err.Error()
}

// Wait waits until the process exits or ctx is done.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s still running: %w", p.Name, ctx.Err())
	}
}

// Log is what this process has written to its log so far (not what an
// earlier process of the same name wrote there).
func (p *Proc) Log() string {
	data, _ := p.readLog(0)
	return string(data)
}

// Tail is the last n lines of Log.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readLog returns the log from from (relative to the process's start in
// it).
func (p *Proc) readLog(from int64) ([]byte, error) {
	f, err := os.Open(p.spec.Log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(p.offset+from, io.SeekStart); err != nil {
		return nil, err
	}
	if p.Exited() && p.end >= 0 {
		// Not what a restart of the same name appended after.
		return io.ReadAll(io.LimitReader(f, max(0, p.end-p.offset-from)))
	}
	return io.ReadAll(f)
}

// WaitLog waits until the process logs a line matching pattern (a regular
// expression: regexp.QuoteMeta for plain text) and returns that line; or it
// fails when within has passed, ctx is done, or the process exits first
// (ErrExited).
func (p *Proc) WaitLog(ctx context.Context, pattern string, within time.Duration) (string, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return "", fmt.Errorf("wait for %s's log: %w", p.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	tick := time.NewTicker(logPoll)
	defer tick.Stop()
	var read int64
	for {
		// Checked before reading, so that the last read sees every line an
		// exited process wrote.
		exited := p.Exited()
		data, _ := p.readLog(read)
		// Only whole lines: the rest is read again with what completes it.
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			for line := range strings.Lines(string(data[:i+1])) {
				if line = strings.TrimRight(line, "\r\n"); re.MatchString(line) {
					return line, nil
				}
			}
			read += int64(i + 1)
		}
		if exited {
			if rest := strings.TrimSpace(string(data[max(0, bytes.LastIndexByte(data, '\n')+1):])); rest != "" && re.MatchString(rest) {
				return rest, nil
			}
			return "", fmt.Errorf("%s %s before logging %q: %w", p.Name, p.Describe(), pattern, ErrExited)
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("%s did not log %q within %s: %w", p.Name, pattern, within, ctx.Err())
			}
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// Signal sends sig to the process alone.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it with SIGKILL and reports ErrKilled. What the process started is
// its own to stop. The figures of Stats are read first, before shutdown
// changes them.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	p.sampleOnce()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM: %w", p.Name, grace, ErrKilled)
}

// Kill is kill -9 of the process alone, as a crash would end it: what it
// started is orphaned. It waits until the process is reaped and checks that
// SIGKILL ended it and that its pid names no process any more.
func (p *Proc) Kill(ctx context.Context) error {
	pid := p.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %s (pid %d): %w", p.Name, pid, err)
	}
	if err := p.Wait(ctx); err != nil {
		return fmt.Errorf("kill -9 %s (pid %d): %w", p.Name, pid, err)
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return fmt.Errorf("%s (pid %d) ended with %v, not killed by SIGKILL", p.Name, pid, p.cmd.ProcessState)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s (pid %d) still exists after kill -9: %v", p.Name, pid, err)
	}
	return nil
}

// KillGroup sends SIGKILL to the process's whole group: it and what it
// started.
func (p *Proc) KillGroup() error {
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill group of %s: %w", p.Name, err)
	}
	return nil
}
