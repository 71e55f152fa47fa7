// Package e2e holds the process-level reliability tests of the call agent:
// the real caller, dispatcher and observer binaries, and the real webhook
// sink plugin, run against an in-process JetStream server configured with
// the repository's nats.conf (so each process uses its own least-privilege
// role) and an in-process provider simulator. The tests kill processes with
// SIGKILL, restart NATS and feed the system garbage while campaigns run, and
// then check the delivery contract of DESIGN.md from the outside: every
// contact ends with exactly one terminal outcome, every call has at most one
// terminal event, every side effect happens once, every alert is published
// and delivered once.
//
// The package has no code of its own beyond its tests, which need Linux
// (process groups, /proc). They build the binaries once per run into a
// temporary directory; a failing test shows the end of every process's log,
// and E2E_LOGS=1 shows them for passing tests too.
package e2e
