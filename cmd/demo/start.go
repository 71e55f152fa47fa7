package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/term"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/silence"
	"github.com/callagent/agent/internal/stack"
)

// startNATS starts the embedded server, unless --nats-url names one, and
// creates the streams as the admin user, which only the demo (an operator)
// is: the agent's own roles may not.
func (d *demo) startNATS(ctx context.Context) error {
	store := filepath.Join(d.runDir, "nats")
	n, err := stack.StartNATS(stack.NATSOptions{
		URL: d.opts.natsURL, ConfigFile: d.opts.natsConf, StoreDir: store, Host: "127.0.0.1", Port: d.opts.natsPort,
		// The embedded server logs with the demo, in its own file.
		Log: filepath.Join(d.logDir, "nats.log"),
	})
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	d.nats = n
	if n.Embedded() {
		d.say(fmt.Sprintf("NATS: embedded in the demo at %s, JetStream store %s", d.natsURL, d.rel(store)))
	} else {
		d.say("NATS: external server at " + d.natsURL)
	}
	admin, err := bus.Connect(ctx, d.cfg.NATS, config.RoleAdmin, "demo", d.log)
	if err != nil {
		return fail("connect to NATS at %s as admin: %v", d.natsURL, err)
	}
	d.adminConn = admin
	if err := admin.EnsureStreams(ctx, d.cfg.NATS.Streams); err != nil {
		return fail("create the streams: %v", err)
	}
	// The operator's silences (observer silence add) need their bucket,
	// which only the admin may create.
	if _, err := admin.KeyValue(ctx, silence.Bucket, 0); err != nil {
		return fail("create the silences bucket: %v", err)
	}
	return nil
}

// startTail subscribes to agent.> as the read-only tail user, as
// `nats sub 'agent.>'` would, and feeds the tracer.
func (d *demo) startTail(ctx context.Context) error {
	conn, err := bus.Connect(ctx, d.cfg.NATS, config.RoleTail, "demo-tail", d.log)
	if err != nil {
		return fail("connect to NATS as tail: %v", err)
	}
	d.tail = conn
	var width func() int
	if f, ok := d.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		width = func() int {
			w, _, err := term.GetSize(int(f.Fd()))
			if err != nil || w <= 0 {
				return 80
			}
			return w
		}
	}
	d.tr = newTracer(d.stdout, width, nil)
	sub, err := conn.Subscribe(ctx, events.AllSubjects, func(m *nats.Msg) { d.tr.handle(m.Subject, m.Data) })
	if err != nil {
		return fail("%v", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	return nil
}

// startServices starts the simulator, the observer and the callers, each
// once the one before is ready.
func (d *demo) startServices(ctx context.Context) error {
	cert := filepath.Join(d.runDir, "smtp-cert.pem")
	sim, err := d.spawn(stack.Spec{Name: "simulator", Env: d.env("simulator"), Args: []string{
		"--http", fmt.Sprintf("127.0.0.1:%d", d.opts.simPort), "--smtp", fmt.Sprintf("127.0.0.1:%d", d.opts.smtpPort),
		"--scenario", d.opts.scenario, "--smtp-cert", cert,
	}})
	if err != nil {
		return err
	}
	d.admin = newAdmin(d.simURL)
	if err := d.ready(ctx, sim, func() bool {
		_, err := os.Stat(cert)
		return err == nil && d.admin.healthy(ctx)
	}); err != nil {
		return err
	}

	// The media server: the provider (the simulator) fetches each call's
	// TwiML and audio from it.
	med, err := d.spawn(stack.Spec{Name: "media", Env: d.env("media"), Args: []string{"--config", d.cfgPath}})
	if err != nil {
		return err
	}
	mediaURL := fmt.Sprintf("http://127.0.0.1:%d", d.opts.mediaPort)
	if err := d.ready(ctx, med, func() bool { return httpOK(ctx, mediaURL+"/healthz") }); err != nil {
		return err
	}

	obs, err := d.spawn(stack.Spec{Name: "observer", Env: d.env("observer"), Args: []string{"run", "--config", d.cfgPath}})
	if err != nil {
		return err
	}
	status := fmt.Sprintf("http://127.0.0.1:%d", d.opts.httpPort)
	if err := d.ready(ctx, obs, func() bool { return httpOK(ctx, status+"/readyz") }); err != nil {
		return err
	}
	for _, name := range []string{"caller-1", "caller-2"} {
		if _, err := d.spawn(stack.Spec{Name: name, Path: "caller", Env: d.env("caller"), Args: []string{"--config", d.cfgPath, "--name", name}}); err != nil {
			return err
		}
	}
	// Both callers are ready once each waits for work on the shared
	// consumer: then the first contact goes to whichever asks first, and a
	// caller that cannot start is reported now rather than as a campaign
	// that never moves.
	var waiting int
	err = d.until(ctx, startWait, func() bool {
		for _, p := range d.stack.Procs() {
			if p.Exited() {
				return true
			}
		}
		info, err := d.adminConn.ConsumerInfo(ctx, events.StreamCalls, d.cfg.Caller.Consumer)
		if err != nil {
			return false
		}
		waiting = info.NumWaiting
		return waiting >= 2
	})
	for _, p := range d.stack.Procs() {
		if p.Exited() {
			return d.died(p)
		}
	}
	if errors.Is(err, errTimeout) {
		return fail("the callers are not waiting for work after %s (%d of 2 are); see %s", startWait, waiting, d.rel(d.logDir))
	}
	if err != nil {
		return err
	}
	d.say(fmt.Sprintf("Started: simulator (%s, SMTP 127.0.0.1:%d), observer (%s), caller-1, caller-2; logs in %s",
		d.simURL, d.opts.smtpPort, status, d.rel(d.logDir)))
	return nil
}

// spawn starts a child of the demo's stack, so shutdown stops it. Its
// binary is the one named like it unless spec.Path says; it logs to
// <log dir>/<name>.log. A child has a process group of its own, so a Ctrl-C
// on the terminal reaches only the demo, which stops the children in order
// (dispatcher and callers before the observer, all before NATS); and it is
// sent SIGTERM should the demo die without doing so, so no caller is left
// behind retrying a server that is gone.
func (d *demo) spawn(spec stack.Spec) (*stack.Proc, error) {
	spec.Path = cmp.Or(spec.Path, spec.Name)
	spec.DeathSignal = syscall.SIGTERM
	return d.stack.Spawn(spec)
}

// ready waits until cond holds, failing if p exits first or it takes
// longer than startWait.
func (d *demo) ready(ctx context.Context, p *stack.Proc, cond func() bool) error {
	deadline := time.Now().Add(startWait)
	for !cond() {
		if p.Exited() {
			return d.died(p)
		}
		if time.Now().After(deadline) {
			return fail("%s is not ready after %s; the end of %s:\n%s", p.Name, startWait, d.rel(p.LogPath()), indent(p.Tail(10)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return nil
}

// waitExit waits for p to exit, failing if another child dies first.
func (d *demo) waitExit(ctx context.Context, p *stack.Proc) error {
	for {
		select {
		case <-p.Done():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
		for _, o := range d.stack.Procs() {
			if o != p && o.Exited() {
				return d.died(o)
			}
		}
	}
}

// died says that p stopped on its own, with the end of its log.
func (d *demo) died(p *stack.Proc) error {
	return fail("%s stopped unexpectedly (%s); the end of %s:\n%s", p.Name, p.Describe(), d.rel(p.LogPath()), indent(p.Tail(10)))
}

// indent indents the lines of a log's end, leaving out blank ones.
func indent(lines string) string {
	var b strings.Builder
	for l := range strings.Lines(lines) {
		if l = strings.TrimRight(l, "\n"); l != "" {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return b.String()
}

// until polls cond until it holds or wait has passed (errTimeout) or ctx is
// done.
func (d *demo) until(ctx context.Context, wait time.Duration, cond func() bool) error {
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			return errTimeout
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return nil
}

var errTimeout = errors.New("timed out")

// keep leaves everything running until Ctrl-C or a process dies.
func (d *demo) keep(ctx context.Context) {
	d.say("")
	d.say("Everything is still running (--keep): press Ctrl-C to stop.")
	for {
		select {
		case <-ctx.Done():
			d.say("")
			return
		case <-time.After(time.Second):
		}
		for _, p := range d.stack.Procs() {
			if p.Name != "dispatcher" && p.Exited() {
				d.say(fmt.Sprintf("demo: %v", d.died(p)))
				return
			}
		}
	}
}

// stopGrace is how long a child has to exit after SIGTERM before it is
// killed. The callers' own shutdown_grace (5 s in the template) fits in it.
const stopGrace = 10 * time.Second

// shutdown stops every child, newest first (SIGTERM, then SIGKILL after a
// grace), then the tail and the embedded server.
func (d *demo) shutdown() {
	killed := d.stack.Stop(stopGrace)
	if d.tail != nil {
		d.tail.Close()
	}
	if d.adminConn != nil {
		d.adminConn.Close()
	}
	if d.nats != nil {
		d.nats.Close()
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	if len(d.stack.Procs()) == 0 {
		return
	}
	if len(killed) > 0 {
		d.say(fmt.Sprintf("Stopped everything; %s had to be killed after %s.", strings.Join(killed, ", "), stopGrace))
	} else {
		d.say("Stopped everything cleanly.")
	}
}

func httpOK(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
