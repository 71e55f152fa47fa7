package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/simulator"
	"github.com/callagent/agent/internal/stack"
)

// waitAlerts waits until every firing alert seen on the bus was delivered to
// every alert sink that takes its severity, and each of their receivers has
// at least one message. want says an alert is expected (a contact failed).
func (d *demo) waitAlerts(ctx context.Context, want bool) error {
	if want {
		err := d.until(ctx, alertWait, func() bool { return len(d.tr.firing()) > 0 })
		if errors.Is(err, errTimeout) {
			return fail("a contact failed but no alert fired within %s; see %s", alertWait, d.rel(filepath.Join(d.logDir, "observer.log")))
		}
		if err != nil {
			return err
		}
	}
	// Every alert sink leaves a receipt on the bus once its receiver has
	// taken the alert; then the simulator shows what it received.
	var missing []string
	err := d.until(ctx, alertWait, func() bool {
		missing = missing[:0]
		for _, s := range alertSinks {
			sk := d.sink(s.sink)
			due := false
			for _, a := range d.tr.allAlerts() {
				if sk == nil || events.SeverityRank(a.Severity) < events.SeverityRank(sk.MinSeverity) {
					continue
				}
				due = true
				if d.tr.receipt(a.ID, s.sink) == "" {
					missing = append(missing, s.sink)
				}
			}
			if due && !slices.Contains(missing, s.sink) {
				rs, err := d.admin.received(ctx, s.receiver)
				if s.receiver == simulator.ServiceTelegram {
					rs = telegramSends(rs)
				}
				if err != nil || len(accepted(rs)) == 0 {
					missing = append(missing, s.sink)
				}
			}
		}
		return len(missing) == 0
	})
	if errors.Is(err, errTimeout) {
		slices.Sort(missing)
		return fail("the alert did not reach %s within %s; see %s", strings.Join(slices.Compact(missing), ", "), alertWait, d.rel(filepath.Join(d.logDir, "observer.log")))
	}
	if err != nil {
		return err
	}
	// The Sheets sink batches; report its rows once the count holds still.
	last, since := -1, time.Now()
	return ignoreTimeout(d.until(ctx, 10*time.Second, func() bool {
		rs, err := d.admin.received(ctx, simulator.ServiceSheets)
		n := sheetRows(accepted(rs))
		if err != nil || n != last || n == 0 {
			last, since = n, time.Now()
			return false
		}
		return time.Since(since) >= settle
	}))
}

func ignoreTimeout(err error) error {
	if errors.Is(err, errTimeout) {
		return nil
	}
	return err
}

// sink returns the configured sink of that name, nil if there is none.
func (d *demo) sink(name string) *config.Sink {
	for i := range d.cfg.Sinks {
		if d.cfg.Sinks[i].Name == name {
			return &d.cfg.Sinks[i]
		}
	}
	return nil
}

// reportReceivers prints what each receiver of the simulator got; it
// returns false when an alert receiver got nothing though an alert fired.
func (d *demo) reportReceivers(ctx context.Context) bool {
	alerts := d.tr.firing()
	if len(alerts) == 0 {
		d.say("No alert fired.")
	} else {
		d.say("Alert: " + alerts[0].Summary + " (" + alerts[0].Severity + ")")
		if len(alerts) > 1 {
			d.say(fmt.Sprintf("  and %d more firing notifications", len(alerts)-1))
		}
	}
	d.say("What each receiver of the simulator got (GET " + d.simURL + "/admin/received/{smtp,telegram,webhook,sheets}):")
	ok := true
	get := func(r string) []simulator.Received {
		rs, err := d.admin.received(ctx, r)
		if err != nil {
			d.say(fmt.Sprintf("  %-9s %v", r, err))
			ok = false
		}
		return rs
	}

	mail := accepted(get(simulator.ServiceSMTP))
	line := fmt.Sprintf("  %-9s %s", "email", plural(len(mail), "message", "messages"))
	if len(mail) > 0 {
		line += " to " + strings.Join(mail[0].To, ", ")
		if mail[0].Fields["tls"] == "true" {
			line += " over STARTTLS"
		}
		line += ": " + quoted(mail, func(r simulator.Received) string { return r.Subject })
	}
	d.say(line)

	tg := accepted(telegramSends(get(simulator.ServiceTelegram)))
	line = fmt.Sprintf("  %-9s %s", "telegram", plural(len(tg), "message", "messages"))
	if len(tg) > 0 {
		line += " to chat " + tg[0].Fields["chat_id"] + ": " + quoted(tg, func(r simulator.Received) string { return firstLine(r.Fields["text"], 70) })
	}
	d.say(line)

	hooks := accepted(get(simulator.ServiceWebhook))
	line = fmt.Sprintf("  %-9s %s", "webhook", plural(len(hooks), "POST", "POSTs"))
	if len(hooks) > 0 {
		good := 0
		for _, h := range hooks {
			if signed(h, d.secrets.webhookSecret) {
				good++
			}
		}
		line += " to /webhook/" + hooks[0].Path
		switch good {
		case len(hooks):
			line += ", signature verified"
			if len(hooks) > 1 {
				line = strings.TrimSuffix(line, "signature verified") + "every signature verified"
			}
		default:
			line += fmt.Sprintf(", %d of %d signatures verified", good, len(hooks))
			ok = false
		}
	}
	d.say(line)

	sheets := accepted(get(simulator.ServiceSheets))
	line = fmt.Sprintf("  %-9s %s", "sheets", plural(sheetRows(sheets), "row", "rows"))
	if len(sheets) > 0 {
		line += fmt.Sprintf(" appended to spreadsheet %s, %s, in %s (timestamp, service, error_category, retry_count, circuit_breaker_state, message)",
			sheets[0].Fields["spreadsheet_id"], sheets[0].Fields["range"], plural(len(sheets), "request", "requests"))
	}
	d.say(line)

	if len(alerts) > 0 && (len(mail) == 0 || len(tg) == 0 || len(hooks) == 0) {
		ok = false
	}
	return ok
}

// quoted lists up to three texts of rs in quotes.
func quoted(rs []simulator.Received, text func(simulator.Received) string) string {
	var parts []string
	for i, r := range rs {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(rs)-3))
			break
		}
		parts = append(parts, "'"+clip(text(r), 90)+"'")
	}
	return strings.Join(parts, ", ")
}

// whereToLook prints where a person goes next: the live status, the tail
// command, the event log, the logs and the replay command.
func (d *demo) whereToLook() {
	d.say("Where to look:")
	when := " (after the demo, with --keep)"
	if d.opts.keep {
		when = ""
	}
	d.say(fmt.Sprintf("  status    http://127.0.0.1:%d/status%s", d.opts.httpPort, when))
	d.say(fmt.Sprintf("  page      http://127.0.0.1:%d/ (live status page)%s", d.opts.httpPort, when))
	pass := "tail-dev-password"
	if d.cfg.NATS.Roles[config.RoleTail].Password != pass {
		pass = `"$AGENT_NATS__ROLES__TAIL__PASSWORD"`
	}
	d.say(fmt.Sprintf("  tail      go tool nats sub 'agent.>' --server %s --user tail --password %s", d.natsURL, pass))
	jsonl := filepath.Join(d.runDir, "events.jsonl")
	d.say(fmt.Sprintf("  events    %s (%s, the seeds' log schema)", d.rel(jsonl), plural(countLines(jsonl), "JSON line", "JSON lines")))
	var names []string
	for _, p := range d.stack.Procs() {
		names = append(names, p.Name)
	}
	if d.nats.Embedded() {
		names = append(names, "nats")
	}
	d.say(fmt.Sprintf("  logs      %s/{%s}.log", d.rel(d.logDir), strings.Join(append(names, "demo"), ",")))
	d.say(fmt.Sprintf("  config    %s", d.rel(d.cfgPath)))
	d.say(fmt.Sprintf("  replay    %s replay --config %s --since 15m --format text", d.rel(d.binPath("observer")), d.rel(d.cfgPath)))
	if d.nats.Embedded() && !d.opts.keep {
		d.say("            (the embedded NATS server stops with the demo: to replay later, run the demo with --keep or against a server with --nats-url)")
	}
}

// replay runs observer replay over the demo's window and prints its report.
func (d *demo) replay(ctx context.Context) {
	from := d.started.UTC().Truncate(time.Second).Format(time.RFC3339)
	args := []string{"replay", "--config", d.cfgPath, "--from", from, "--format", "text"}
	d.say(fmt.Sprintf("Post-mortem (%s %s):", d.rel(d.binPath("observer")), strings.Join(relArgs(d, args), " ")))
	var out, errOut bytes.Buffer
	cmd := stack.Command(ctx, stopGrace, d.binPath("observer"), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = d.env("replay"), &out, &errOut
	err := cmd.Run()
	os.WriteFile(filepath.Join(d.logDir, "replay.log"), errOut.Bytes(), 0o644)
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		d.say("  " + l)
	}
	if err != nil {
		d.say(fmt.Sprintf("  (observer replay failed: %v; see %s)", err, d.rel(filepath.Join(d.logDir, "replay.log"))))
	}
}

// relArgs shows the configuration path of args relative, as people type it.
func relArgs(d *demo, args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if a == d.cfgPath {
			out[i] = d.rel(a)
		}
	}
	return out
}

func countLines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(data, []byte("\n"))
}
