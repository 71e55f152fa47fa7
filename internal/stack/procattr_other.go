//go:build unix && !linux

package stack

import "syscall"

// sysProcAttr gives a child its own process group, so that a Ctrl-C on the
// terminal reaches only this process, which stops the children in order.
// The kernel has no parent-death signal here: death is not used.
func sysProcAttr(death syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
