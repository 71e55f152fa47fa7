package simulator

import (
	"net/url"
	"slices"
	"testing"
	"time"
)

func listCallsReq(query string) req {
	return req{
		method: "GET", path: "/telephony/2010-04-01/Accounts/" + account + "/Calls.json?" + query,
		header: map[string]string{"Authorization": basic(account, "tok")},
	}
}

// TestTelephonyListCalls checks Twilio's call list: filters, newest first,
// paging, start_time only once a call is dialed, and that listing neither
// moves a call on nor counts as placing one.
func TestTelephonyListCalls(t *testing.T) {
	clk := newClock() // 2026-03-02 10:00 UTC
	s := start(t, "services: {telephony: {rings: 1}}", clk)
	const a, b = "+15551230001", "+15551230002"
	sids := map[string]string{}
	place := func(name string, r req) {
		t.Helper()
		res := r.do(t, s, nil)
		if res.status != 201 {
			t.Fatalf("place %s: %d %s", name, res.status, res.body)
		}
		sids[name], _ = res.json(t)["sid"].(string)
		clk.Advance(time.Minute)
	}
	otherFrom := placeCallReq("c-other", a)
	otherFrom.body = url.Values{"To": {a}, "From": {"+15550009999"}, "Twiml": {"<Response><Say>Hello</Say></Response>"}}.Encode()

	place("a1", placeCallReq("c-a1", a)) // 10:00, dialed below
	place("b1", placeCallReq("c-b1", b)) // 10:01
	place("other", otherFrom)            // 10:02
	clk.Advance(24 * time.Hour)
	place("a2", placeCallReq("c-a2", a)) // the next day 10:03, dialed below
	place("a3", placeCallReq("c-a3", a)) // the next day 10:04, still queued
	for _, name := range []string{"a1", "a2"} {
		if r := getCallReq(sids[name]).do(t, s, nil); r.json(t)["status"] != "ringing" {
			t.Fatalf("poll %s: %s", name, r.body)
		}
	}

	tests := []struct {
		name  string
		query string
		want  []string // newest first
	}{
		{"all", "", []string{"a3", "a2", "other", "b1", "a1"}},
		{"to", "To=" + url.QueryEscape(a), []string{"a3", "a2", "other", "a1"}},
		{"to and from", "To=" + url.QueryEscape(a) + "&From=" + url.QueryEscape("+15550001111"), []string{"a3", "a2", "a1"}},
		// Only dialed calls have a start_time: a3, queued, is left out.
		{"started on or after a date", "To=" + url.QueryEscape(a) + "&StartTime>=2026-03-03", []string{"a2"}},
		{"started on or before a date", "StartTime<=2026-03-02", []string{"a1"}},
		{"started on a date", "StartTime=2026-03-03", []string{"a2"}},
		{"encoded operator, date and time", "StartTime%3E=" + url.QueryEscape("2026-03-02T10:00:30Z"), []string{"a2"}},
		{"started at or after a time", "StartTime>=2026-03-02T10:00:00Z", []string{"a2", "a1"}},
		{"no match", "To=" + url.QueryEscape("+15551239999"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := listCallsReq(tt.query).do(t, s, nil)
			if r.status != 200 {
				t.Fatalf("list: %d %s", r.status, r.body)
			}
			var got []string
			for _, c := range dig(r.json(t), "calls").([]any) {
				for name, sid := range sids {
					if dig(c, "sid") == sid {
						got = append(got, name)
					}
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("calls %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("resource", func(t *testing.T) {
		m := listCallsReq("To="+url.QueryEscape(a)+"&PageSize=3").do(t, s, nil).json(t)
		calls := dig(m, "calls").([]any)
		a3, a2 := calls[0], calls[1]
		if dig(a3, "status") != "queued" || dig(a3, "start_time") != nil || dig(a3, "to") != a || dig(a3, "from") != "+15550001111" {
			t.Errorf("queued call %v", a3)
		}
		if dig(a2, "status") != "ringing" || dig(a2, "start_time") != "Tue, 03 Mar 2026 10:03:00 +0000" || dig(a2, "date_created") != "Tue, 03 Mar 2026 10:03:00 +0000" {
			t.Errorf("ringing call %v", a2)
		}
	})

	t.Run("paging", func(t *testing.T) {
		var got []string
		next := "To=" + url.QueryEscape(a) + "&PageSize=2"
		for pages := 0; next != ""; pages++ {
			if pages > 3 {
				t.Fatal("paging does not end")
			}
			m := listCallsReq(next).do(t, s, nil).json(t)
			if dig(m, "page_size") != float64(2) {
				t.Errorf("page_size %v", dig(m, "page_size"))
			}
			for _, c := range dig(m, "calls").([]any) {
				got = append(got, dig(c, "sid").(string))
			}
			next = ""
			if u, ok := dig(m, "next_page_uri").(string); ok {
				pu, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				next = pu.RawQuery
			}
		}
		want := []string{sids["a3"], sids["a2"], sids["other"], sids["a1"]}
		if !slices.Equal(got, want) {
			t.Errorf("paged through %v, want %v", got, want)
		}
	})

	invalid := []struct {
		name   string
		req    req
		status int
		code   float64
	}{
		{"page size too large", listCallsReq("PageSize=1001"), 400, 20001},
		{"page size not a number", listCallsReq("PageSize=many"), 400, 20001},
		{"bad start time", listCallsReq("StartTime>=yesterday"), 400, 20001},
		{"wrong account", func() req {
			q := listCallsReq("")
			q.header["Authorization"] = basic("ACother", "tok")
			return q
		}(), 401, 20003},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req.do(t, s, nil)
			if m := r.json(t); r.status != tt.status || m["code"] != tt.code {
				t.Errorf("%d %v, want %d code %v", r.status, m, tt.status, tt.code)
			}
		})
	}

	// Listing moved nothing on: a3's first poll still rings, then it ends.
	if got := getCallReq(sids["a3"]).do(t, s, nil).json(t)["status"]; got != "ringing" {
		t.Errorf("first poll after listing = %v, want ringing", got)
	}
	if n := s.SideEffects(ServiceTelephony, "c-a3"); n != 1 {
		t.Errorf("side effects = %d, want the one call placed", n)
	}
}
