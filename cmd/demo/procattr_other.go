//go:build unix && !linux

package main

import "syscall"

// sysProcAttr gives a child its own process group, so a Ctrl-C on the
// terminal reaches only the demo, which stops the children in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
