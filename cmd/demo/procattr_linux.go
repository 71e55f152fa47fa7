package main

import "syscall"

// sysProcAttr gives a child its own process group, so a Ctrl-C on the
// terminal reaches only the demo, which stops the children in order; and asks
// the kernel to send it SIGTERM should the demo die without doing so (killed,
// crashed), so no caller is left behind retrying a server that is gone.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
