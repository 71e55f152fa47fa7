package simulator

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// faultState is a scenario fault plus what the simulator has counted for it.
type faultState struct {
	Fault
	used     int     // times the fault fired
	seen     int     // matching data requests (flap)
	inflight int     // admitted requests still running (concurrency)
	win      *window // admitted requests in the rolling window (burst)
}

func newFaultState(service string, f Fault) *faultState {
	fs := &faultState{Fault: f}
	switch f.Kind {
	case KindStatus:
		fs.Status = cmp.Or(f.Status, http.StatusInternalServerError) // unvalidated Go scenarios
	case KindConcurrency:
		fs.Limit = cmp.Or(f.Limit, 5)
		fs.Status = cmp.Or(f.Status, http.StatusTooManyRequests)
	case KindBurst:
		limit, period := 100, 10*time.Second
		if service == ServiceSheets {
			limit, period = 60, time.Minute
		}
		fs.win = &window{limit: cmp.Or(f.Limit, limit), period: cmp.Or(f.Window.D(), period)}
		fs.Status = cmp.Or(f.Status, http.StatusTooManyRequests)
	case KindFlap:
		fs.Every = cmp.Or(f.Every, 2)
		fs.Status = cmp.Or(f.Status, http.StatusServiceUnavailable)
	}
	return fs
}

func (fs *faultState) appliesTo(ep string) bool {
	e := cmp.Or(fs.Endpoint, EndpointData)
	return e == EndpointAll || e == ep
}

// consumes says whether a request on ep uses up the fault's count and feeds
// its counters. Health probes of an "all" fault do not, so that a background
// prober does not change when the service recovers.
func (fs *faultState) consumes(ep string) bool {
	return ep == EndpointData || fs.Endpoint == EndpointHealth
}

func (fs *faultState) exhausted() bool { return fs.Count > 0 && fs.used >= fs.Count }

func (fs *faultState) flapping(now, since time.Time) bool {
	if fs.Period > 0 {
		return (now.Sub(since)/fs.Period.D())%2 == 0
	}
	return fs.seen > 0 && (fs.seen-1)%fs.Every == 0
}

// window counts events in a rolling period.
type window struct {
	limit  int
	period time.Duration
	times  []time.Time
}

func (w *window) trim(now time.Time) {
	i := 0
	for i < len(w.times) && now.Sub(w.times[i]) >= w.period {
		i++
	}
	w.times = w.times[i:]
}

func (w *window) full(now time.Time) bool {
	w.trim(now)
	return len(w.times) >= w.limit
}

func (w *window) add(now time.Time) {
	w.trim(now)
	w.times = append(w.times, now)
}

// resetIn is how long until the window has room again (its oldest event
// leaves it); the full period when it is empty.
func (w *window) resetIn(now time.Time) time.Duration {
	w.trim(now)
	if len(w.times) == 0 {
		return w.period
	}
	return w.times[0].Add(w.period).Sub(now)
}

// rate is a snapshot of a service's rate-limit window for its headers.
type rate struct {
	limit, remaining int
	period, reset    time.Duration
}

// decision is what the simulator does with one request.
type decision struct {
	fault   *faultState // nil: answer normally
	hold    time.Duration
	release func()
	rate    *rate
}

// decide picks the first fault that applies to the request and updates the
// faults' counters. The caller must call release when the request is over.
func (s *Server) decide(service, ep, hay string) decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var releases []func()
	d := decision{}
	for _, fs := range s.faults[service] {
		if !fs.appliesTo(ep) || fs.exhausted() || (fs.Match != "" && !strings.Contains(hay, fs.Match)) {
			continue
		}
		consume := fs.consumes(ep)
		if d.fault != nil {
			// A request answered by an earlier fault still counts against
			// the limits it passes, as it does at a real API's edge: a slow
			// answer holds a concurrency slot while it is slow.
			switch {
			case !consume:
			case fs.Kind == KindBurst && !fs.win.full(now):
				fs.win.add(now)
			case fs.Kind == KindConcurrency && fs.inflight < fs.Limit:
				fs.inflight++
				releases = append(releases, func() { fs.inflight-- })
			}
			continue
		}
		fire := false
		switch fs.Kind {
		case KindConcurrency:
			if fs.inflight >= fs.Limit {
				fire = true
			} else if consume {
				fs.inflight++
				d.hold += fs.Delay.D()
				releases = append(releases, func() { fs.inflight-- })
			}
		case KindBurst:
			if fs.win.full(now) {
				fire = true
			} else if consume {
				fs.win.add(now)
			}
		case KindFlap:
			if consume {
				fs.seen++
			}
			fire = fs.flapping(now, s.scSince)
		default:
			fire = true
		}
		if fire {
			if consume {
				fs.used++
			}
			d.fault = fs
		}
	}
	d.release = func() {
		if len(releases) == 0 {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, r := range releases {
			r()
		}
	}
	if m := s.meterLocked(service, ep, now); m != nil {
		d.rate = &rate{limit: m.limit, remaining: max(0, m.limit-len(m.times)), period: m.period, reset: m.resetIn(now)}
	}
	return d
}

// meterLocked returns the window behind a service's rate-limit headers: its
// burst fault's when it has one, else a generous default that only counts.
func (s *Server) meterLocked(service, ep string, now time.Time) *window {
	for _, fs := range s.faults[service] {
		if fs.Kind == KindBurst {
			fs.win.trim(now)
			return fs.win
		}
	}
	m := s.meters[service]
	if m != nil && ep == EndpointData {
		m.add(now)
	}
	return m
}

type ctxKey struct{}

// wrap runs a service endpoint through the scenario: latency, fault choice,
// counting and, for receivers, recording.
func (s *Server) wrap(service, ep string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			s.log.Debug("read request body", "service", service, "err", err)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.arrive(service, start)

		// A receiver's request is listed once answered (see Received): the
		// handler fills in its path, fields and verification on the way.
		var rec *Received
		var epoch uint64
		if slices.Contains(Receivers, service) {
			rec = &Received{Time: start, Receiver: service, Headers: flatten(r.Header), Body: string(body)}
			epoch = s.epochNow()
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, rec))
		}

		d := s.decide(service, ep, haystack(r, body))
		defer d.release()
		if d.rate != nil {
			rateHeaders(w.Header(), service, d.rate)
		}
		s.sleep(nil, s.latency(service)+d.hold)
		status := s.deliver(w, r, service, d, h)

		s.countRequest(service, status)
		kind := FaultKind("")
		if d.fault != nil {
			kind = d.fault.Kind
		}
		if rec != nil {
			s.record(rec, epoch, func() { rec.Status, rec.Fault = status, kind })
		}
		attrs := []any{"service", service, "route", r.Pattern, "status", status,
			"call_id", r.Header.Get(HeaderCallID), "ms", s.now().Sub(start).Milliseconds()}
		if kind != "" {
			s.log.Info("fault applied", append(attrs, "fault", string(kind))...)
		} else {
			s.log.Debug("request", attrs...)
		}
	})
}

func (s *Server) latency(service string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if svc, ok := s.sc.Services[service]; ok && svc.Latency > 0 {
		return svc.Latency.D()
	}
	if slices.Contains(Providers, service) {
		return s.sc.Latency.D()
	}
	return 0
}

// sleep waits d, or until ctx (when not nil) is done or the server closes.
// A zero d with a ctx waits for ctx: a stall that lasts until the client leaves.
func (s *Server) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 && ctx == nil {
		return
	}
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	var ctxDone <-chan struct{}
	if ctx != nil {
		ctxDone = ctx.Done()
	}
	select {
	case <-timer:
	case <-ctxDone:
	case <-s.done:
	}
}

func (s *Server) closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// deliver answers the request as its decision says and returns the status
// sent (0 when the connection was closed without one).
func (s *Server) deliver(w http.ResponseWriter, r *http.Request, service string, d decision, h http.HandlerFunc) int {
	f := d.fault
	if f == nil {
		return run(w, r, h)
	}
	switch f.Kind {
	case KindStatus, KindConcurrency, KindBurst, KindFlap:
		return s.writeFault(w, service, f, d)
	case KindHTML502:
		body := []byte(html502)
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("Server", "nginx")
		w.WriteHeader(http.StatusBadGateway)
		w.Write(body)
		return http.StatusBadGateway
	case KindRefuse:
		hangUp(w, true)
		return 0
	case KindSlow:
		// The work is done after the delay even when the client has gone:
		// a client that timed out and retries causes a duplicate.
		s.sleep(nil, f.Delay.D())
		return run(w, r, h)
	}

	// The remaining kinds do the work, then spoil the answer.
	b := &buffer{header: make(http.Header)}
	h(b, r)
	status := cmp.Or(b.status, http.StatusOK)
	for k, v := range b.header {
		w.Header()[k] = v
	}
	full := b.body.Bytes()
	half := full[:len(full)/2]

	switch f.Kind {
	case KindLostResponse:
		s.sleep(nil, f.Delay.D())
		hangUp(w, false)
		return 0
	case KindStall:
		w.Header().Set("Content-Length", strconv.Itoa(len(full)))
		w.WriteHeader(status)
		w.Write(half)
		http.NewResponseController(w).Flush()
		s.sleep(r.Context(), f.Delay.D())
		if s.closing() || r.Context().Err() != nil {
			return status // leave the body short: the client sees it cut
		}
		w.Write(full[len(half):])
		return status
	case KindReset:
		w.Header().Set("Content-Length", strconv.Itoa(len(full)))
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return 0
		}
		fmt.Fprintf(brw, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
		w.Header().Write(brw)
		brw.WriteString("\r\n")
		brw.Write(half)
		brw.Flush()
		abort(conn)
		return status
	case KindTruncated:
		return writeBody(w, status, half)
	case KindMalformed:
		w.Header().Set("Content-Type", "application/json")
		return writeBody(w, status, []byte(malformedJSON))
	case KindEmptyBody:
		return writeBody(w, status, nil)
	}
	return writeBody(w, status, full)
}

func writeBody(w http.ResponseWriter, status int, body []byte) int {
	w.Header().Del("Transfer-Encoding")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
	return status
}

// run calls h and returns the status it wrote.
func run(w http.ResponseWriter, r *http.Request, h http.HandlerFunc) int {
	sw := &statusWriter{ResponseWriter: w}
	h(sw, r)
	return cmp.Or(sw.status, http.StatusOK)
}

// hangUp closes the connection without an answer; with reset, it sends a TCP
// RST instead of a FIN.
func hangUp(w http.ResponseWriter, reset bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if reset {
		abort(conn)
		return
	}
	conn.Close()
}

// abort closes conn with a TCP reset.
func abort(conn net.Conn) {
	if l, ok := conn.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	conn.Close()
}

// writeFault answers with the service's error for a status-like fault.
func (s *Server) writeFault(w http.ResponseWriter, service string, f *faultState, d decision) int {
	for k, v := range f.Headers {
		w.Header().Set(k, v)
	}
	e := apiError{Status: f.Status, Code: f.Code, Message: f.Message, Policy: f.Policy, Kind: f.Kind, Limit: f.Limit}
	now := s.now()
	switch {
	case f.RetryAfter != "":
		e.RetryAfter, _ = retryAfterValue(f.RetryAfter, now)
	case f.Kind == KindBurst && (service == ServiceLLM || service == ServiceTelegram):
		e.RetryAfter = strconv.Itoa(int((f.win.resetIn(now) + time.Second - 1) / time.Second))
	}
	if e.RetryAfter != "" && service != ServiceTelegram {
		w.Header().Set("Retry-After", e.RetryAfter)
	}
	writeError(w, service, e, now)
	return f.Status
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// buffer holds a handler's answer so that a fault can spoil its delivery.
type buffer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *buffer) Header() http.Header { return b.header }

func (b *buffer) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *buffer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// haystack is what a fault's Match is looked for in: method and path, header
// values and body.
func haystack(r *http.Request, body []byte) string {
	var sb strings.Builder
	sb.WriteString(r.Method + " " + r.URL.RequestURI() + "\n")
	for _, vs := range r.Header {
		for _, v := range vs {
			sb.WriteString(v + "\n")
		}
	}
	sb.Write(body)
	return sb.String()
}

// flatten keeps the first value of each header.
func flatten(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			out[k] = vs[0]
		}
	}
	return out
}

// rateHeaders writes the rate-limit headers the real service sends.
func rateHeaders(h http.Header, service string, rt *rate) {
	switch service {
	case ServiceLLM:
		h.Set("x-ratelimit-limit-requests", strconv.Itoa(rt.limit))
		h.Set("x-ratelimit-remaining-requests", strconv.Itoa(rt.remaining))
		h.Set("x-ratelimit-reset-requests", rt.reset.Round(time.Millisecond).String())
	case ServiceCRM:
		h.Set("X-HubSpot-RateLimit-Interval-Milliseconds", strconv.FormatInt(rt.period.Milliseconds(), 10))
		h.Set("X-HubSpot-RateLimit-Max", strconv.Itoa(rt.limit))
		h.Set("X-HubSpot-RateLimit-Remaining", strconv.Itoa(rt.remaining))
	}
}

// received returns the recording of the request, nil for providers.
func received(r *http.Request) *Received {
	rec, _ := r.Context().Value(ctxKey{}).(*Received)
	return rec
}

const html502 = `<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
`

// malformedJSON is what a broken upstream sends: it starts like JSON and is not.
const malformedJSON = `{"id": "resp_7f3a", "object": "result", "data": [{"value": 1,}, {"value": 2` + "\x00" + `<!-- upstream timeout -->`
