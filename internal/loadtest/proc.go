package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// sampleEvery is how often a child's memory is read from /proc.
const sampleEvery = 200 * time.Millisecond

// Proc is a child process whose memory is sampled while it runs.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	logf *os.File
	done chan struct{}

	mu      sync.Mutex
	err     error
	peakKB  int64 // VmHWM: the kernel's own high-water mark of resident memory
	rssKB   int64 // VmRSS at the last sample
	cpu     time.Duration
	sampled bool
}

func newProc(name string, cmd *exec.Cmd, logf *os.File) *Proc {
	p := &Proc{Name: name, cmd: cmd, logf: logf, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		logf.Close()
		close(p.done)
	}()
	go p.sample()
	return p
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error once Done is closed.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// PeakRSS is the highest resident memory seen (VmHWM), in bytes; ok is false
// when /proc could not be read (not Linux, or the process ended first).
func (p *Proc) PeakRSS() (bytes int64, ok bool) {
	p.sampleOnce()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peakKB * 1024, p.sampled
}

// CPU is the user and system time the process had used at the last sample.
func (p *Proc) CPU() time.Duration {
	p.sampleOnce()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cpu
}

// Stat is the process's figures so far.
func (p *Proc) Stat() ProcStat {
	peak, _ := p.PeakRSS()
	return ProcStat{Name: p.Name, PeakRSS: peak, CPU: p.CPU()}
}

func (p *Proc) sample() {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		p.sampleOnce()
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
}

func (p *Proc) sampleOnce() {
	select {
	case <-p.done:
		return // the pid may belong to another process by now
	default:
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return
	}
	hwm, rss, ok := parseStatus(data)
	if !ok {
		return
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	cpu, cpuOK := time.Duration(0), false
	if err == nil {
		cpu, cpuOK = parseStat(stat)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.peakKB, p.rssKB, p.sampled = max(p.peakKB, hwm), rss, true
	if cpuOK {
		p.cpu = max(p.cpu, cpu)
	}
}

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ), 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// parseStat reads utime + stime from /proc/<pid>/stat.
func parseStat(data []byte) (time.Duration, bool) {
	// The command name, in parentheses, may hold spaces: count from after it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(data[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * clockTick, true
}

// parseStatus reads VmHWM and VmRSS (kB) from /proc/<pid>/status.
func parseStatus(data []byte) (hwmKB, rssKB int64, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	found := 0
	for sc.Scan() {
		key, val, cut := bytes.Cut(sc.Bytes(), []byte(":"))
		if !cut {
			continue
		}
		var dst *int64
		switch string(key) {
		case "VmHWM":
			dst = &hwmKB
		case "VmRSS":
			dst = &rssKB
		default:
			continue
		}
		fields := bytes.Fields(val)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			continue
		}
		*dst = n
		found++
	}
	return hwmKB, rssKB, found == 2
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.sampleOnce()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM: killed", p.Name, grace)
}

// selfStat is this process's figures: it runs the NATS server and the
// simulator.
func selfStat() ProcStat {
	st := ProcStat{Name: "harness"}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		st.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		st.PeakRSS = ru.Maxrss * 1024 // kB on Linux
	}
	return st
}
