package stack

import "syscall"

// sysProcAttr gives a child its own process group, so that a Ctrl-C on the
// terminal reaches only this process, which stops the children in order;
// and asks the kernel to send it death should this process die without
// doing so (killed, crashed), so that no child is left behind retrying a
// server that is gone.
func sysProcAttr(death syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: death}
}
