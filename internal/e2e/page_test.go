//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/callagent/agent/internal/observer/silence"
	"github.com/callagent/agent/internal/simulator"
)

// chromium finds the browser the page test drives: $CHROMIUM, else Debian's
// chromium on the PATH. CI installs it (make chromium); a machine without it
// fails the test with the way to get it, rather than skipping.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the status page test needs a headless Chromium: run `make chromium` " +
		"(apt-get update && apt-get install -y chromium), or set CHROMIUM to a Chrome binary")
	return ""
}

// observerAddr is the address the observer's HTTP server listens on, from
// its "observer started" log line.
func observerAddr(t *testing.T, p *proc) string {
	t.Helper()
	m := regexp.MustCompile(`"?http"?[=:]"?(127\.0\.0\.1:\d+)`).FindStringSubmatch(p.Log())
	if m == nil {
		t.Fatalf("no http address in the observer's log:\n%s", p.Tail(20))
	}
	return m[1]
}

// TestStatusPageInChromium loads the live status page in a real headless
// Chromium during a demo-like run (NATS with nats.conf, the simulator, a
// real observer, caller and dispatcher) and watches, on screen, the CRM's
// breaker open when the CRM fails and close again once it recovers, without
// a reload. Screenshots go to the test's temporary directory (and to
// $STATUS_PAGE_SCREENSHOT when set: how docs/status-page.png is made).
func TestStatusPageInChromium(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	e := newEnv(t, `
name: crm-down
services:
  crm:
    faults: [{kind: status, status: 503, count: 0}]
`)
	s := e.settings()
	s.set("services.crm.breaker.failure_threshold", 2)
	s.set("services.crm.breaker.recovery_timeout", "3s")
	s.set("caller.concurrency", 1)
	s.set("dispatcher.max_attempts", 5)
	s.set("sinks", []any{map[string]any{
		"name": "webhook", "plugin": "webhook", "kind": "alert", "min_severity": "info",
		"batch_size": 10, "batch_wait": "100ms", "backoff": "200ms", "max_backoff": "1s", "timeout": "5s",
		"config": map[string]any{"url": e.sim.URL() + "/webhook/alerts"},
	}})
	cfg := e.write("agent", s)
	sctx, scancel := timeout(10 * time.Second)
	defer scancel()
	if _, err := e.admin.KeyValue(sctx, silence.Bucket, 0); err != nil { // as dispatcher provision makes it
		t.Fatal(err)
	}
	obs := e.startObserver(cfg, "observer")
	// An operator silences ElevenLabs (not the CRM that will fail).
	add := e.start("silence-add", "observer", "silence", "add", "--config", cfg,
		"--service", "elevenlabs", "--for", "1h", "--comment", "vendor incident INC-42", "--by", "oncall")
	if code := add.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("observer silence add exited %d:\n%s", code, add.Tail(20))
	}
	url := "http://" + observerAddr(t, obs) + "/"
	e.startCaller(cfg, "caller-a")
	contacts, _ := e.contactsFile(4)
	d := e.runDispatcher(cfg, contacts, "spring")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1100))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	// The browser starts on a context without a deadline (its life);
	// each wait below has its own.
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	within := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(bctx, d)
		t.Cleanup(cancel)
		return ctx
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(within(10*time.Second), chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	breaker := `[data-service="crm"] .breaker`
	if err := chromedp.Do(within(60*time.Second),
		chromedp.WaitVisible(`#conn[data-state="live"]`),
		chromedp.WaitVisible(breaker+`[data-state="open"]`),
	); err != nil {
		t.Fatalf("waiting for the CRM breaker to show open: %v\nobserver:\n%s", err, obs.Tail(30))
	}
	state, countdown := text(breaker), text(`[data-service="crm"] .half-open-in`)
	if state != "open" {
		t.Errorf("breaker shows %q, want open", state)
	}
	t.Logf("on screen: crm breaker %q, %q", state, countdown)
	shot(t, bctx, "open")

	healthy, err := simulator.ParseScenario([]byte("name: healthy\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__noReload = true`)); err != nil {
		t.Fatal(err)
	}
	e.sim.SetScenario(healthy)
	if err := chromedp.Do(within(60*time.Second), chromedp.WaitVisible(breaker+`[data-state="closed"]`)); err != nil {
		t.Fatalf("waiting for the CRM breaker to show closed: %v\nobserver:\n%s", err, obs.Tail(30))
	}
	state = text(breaker)
	same, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__noReload === true`))
	if err != nil {
		t.Fatal(err)
	}
	if state != "closed" || !same {
		t.Errorf("breaker shows %q after recovery (same page, no reload: %v), want closed", state, same)
	}

	sum := e.summary(d, 60*time.Second)
	done := sum.Succeeded + sum.Failed
	if _, err := chromedp.Run(within(20*time.Second), chromedp.Poll[bool](fmt.Sprintf(
		`(document.querySelector('[data-campaign="spring"] .progress-text') || {}).textContent?.startsWith("%d / 4")`, done))); err != nil {
		t.Fatalf("waiting for the campaign's progress (%d of 4 done): %v", done, err)
	}
	progress, sinkRow, alertRows := text(`[data-campaign="spring"] .progress-text`), text(`#sinks tr[data-sink="webhook"]`), text(`#alerts tbody`)
	t.Logf("on screen: campaign %q; sink %q", progress, sinkRow)
	if !regexp.MustCompile(`resolved`).MatchString(alertRows) {
		t.Errorf("recent alerts on screen lack the breaker's resolution: %q", alertRows)
	}
	if row := text(`#silences tbody tr[data-silence]`); !strings.Contains(row, "service=elevenlabs") || !strings.Contains(row, "INC-42") {
		t.Errorf("the active silence on screen: %q", row)
	}
	// The operator pauses the campaign: the page shows it, and which
	// observer is active.
	pause := e.start("pause", "dispatcher", "pause", "--config", cfg, "--campaign", "spring")
	if code := pause.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("dispatcher pause exited %d:\n%s", code, pause.Tail(20))
	}
	if _, err := chromedp.Run(within(20*time.Second), chromedp.Poll[bool](
		`(document.querySelector('[data-campaign="spring"] .badge.control') || {}).textContent === "paused"`)); err != nil {
		t.Fatalf("waiting for the campaign to show paused: %v", err)
	}
	if l := text(`#lease`); !strings.HasPrefix(l, "active observer: ") {
		t.Errorf("the page names no active observer: %q", l)
	}
	t.Logf("on screen: campaign %q %q; %q", text(`[data-campaign="spring"] .badge.control`), text(`[data-campaign="spring"] .pacing`), text(`#lease`))
	shot(t, bctx, "closed")

	// A phone: one column, nothing wider than the screen.
	if err := chromedp.Do(within(10*time.Second), chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(within(10*time.Second), chromedp.Poll[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
	if err != nil || !overflow {
		t.Errorf("the page is wider than a 390 px phone screen: %v", err)
	}
	shot(t, bctx, "phone")
}

// shot saves a full-page screenshot as <temp dir>/status-<name>.png, and the
// "closed" one also to $STATUS_PAGE_SCREENSHOT when set.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), "status-"+name+".png")
	if err := os.WriteFile(path, png, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
	if dst := os.Getenv("STATUS_PAGE_SCREENSHOT"); dst != "" && name == "closed" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
