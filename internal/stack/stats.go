package stack

import (
	"fmt"
	"time"

	"github.com/prometheus/procfs"
)

// sampleEvery is how often a running process's figures are read from /proc:
// once it has exited they are gone.
const sampleEvery = 200 * time.Millisecond

// Stats are a process's figures, read from /proc (Linux).
type Stats struct {
	// PeakRSS is the highest resident memory, in bytes: the kernel's own
	// high-water mark (VmHWM), so no peak between samples is missed.
	PeakRSS int64
	// RSS is the resident memory at the last sample, in bytes.
	RSS int64
	// CPU is the user and system time used at the last sample.
	CPU time.Duration
	// OK is false when /proc could not be read (not Linux, or the process
	// ended before the first sample).
	OK bool
}

// Stats returns the process's figures: read now while it runs, the last
// sample's once it has exited.
func (p *Proc) Stats() Stats {
	p.sampleOnce()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Self returns this process's own figures (it may run an embedded NATS
// server and a simulator).
func Self() Stats {
	proc, err := procfs.Self()
	if err != nil {
		return Stats{}
	}
	return read(proc)
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
	if p.Exited() {
		return // the pid may name another process by now
	}
	proc, err := procfs.NewProc(p.Pid())
	if err != nil {
		return
	}
	st := read(proc)
	if !st.OK {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats = Stats{PeakRSS: max(p.stats.PeakRSS, st.PeakRSS), RSS: st.RSS, CPU: max(p.stats.CPU, st.CPU), OK: true}
}

// read reads a process's memory (OK only when it has memory: a zombie has
// none) and CPU time.
func read(proc procfs.Proc) Stats {
	status, err := proc.NewStatus()
	if err != nil || status.VmHWM == 0 {
		return Stats{}
	}
	st := Stats{PeakRSS: int64(status.VmHWM), RSS: int64(status.VmRSS), OK: true}
	if stat, err := proc.Stat(); err == nil {
		st.CPU = time.Duration(stat.CPUTime() * float64(time.Second))
	}
	return st
}

// Group returns the pids of the live processes left in p's process group
// other than p: once p is dead, the children it started and orphaned.
func (p *Proc) Group() ([]int, error) {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("group of %s: %w", p.Name, err)
	}
	var out []int
	for _, proc := range all {
		stat, err := proc.Stat()
		if err != nil {
			continue // gone meanwhile
		}
		if stat.PGRP == p.Pid() && stat.PID != p.Pid() && stat.State != "Z" {
			out = append(out, stat.PID)
		}
	}
	return out, nil
}
